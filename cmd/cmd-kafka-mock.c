/*
 * cmd-kafka-mock: `mlopsd kafka-mock`, a standalone mock Kafka cluster for
 * tests and demos (kmock.c around librdkafka's mock cluster).
 *
 * The first line on stdout is "bootstrap: HOST:PORT[,...]", flushed, so a
 * script can start it in the background and read one line to know where
 * Kafka is; then it waits for SIGTERM or SIGINT and exits 0.  --partitions
 * is the partition count of the --topic topics that name none: the mock
 * of librdkafka 2.0.2 auto-creates every other topic with 4 partitions
 * and offers no way to change that, and it binds 127.0.0.1 on a port of
 * the kernel's choosing, so --listen only accepts a loopback address with
 * port 0.  `kafka-mock --help` says both.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "cmd/kmock.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"

#define KMOCK_MAX_BROKERS	64
#define KMOCK_MAX_PARTITIONS	10000
#define KMOCK_TOPIC_MAX		249	/* Kafka's limit on topic names */

/* Kafka topic names: 1-249 of [A-Za-z0-9._-], not "." or "..". */
static int
cmd_kmock_topic_ok(const char *t, size_t len)
{
	size_t	i;

	if (len == 0 || len > KMOCK_TOPIC_MAX)
		return 0;
	if ((len == 1 && t[0] == '.') || (len == 2 && t[0] == '.' && t[1] == '.'))
		return 0;
	for (i = 0; i < len; i++) {
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789._-", t[i]) == NULL)
			return 0;
	}
	return 1;
}

static int
cmd_kmock_listen_ok(const char *addr)
{
	char	host[256];
	int	port;

	if (util_split_hostport(addr, host, sizeof host, &port) == -1)
		return 0;
	return port == 0 && (strcmp(host, "127.0.0.1") == 0 ||
	    strcmp(host, "localhost") == 0);
}

static int
cmd_kafka_mock_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "brokers", required_argument, NULL, 'b' },
		{ "partitions", required_argument, NULL, 'p' },
		{ "topic", required_argument, NULL, 't' },
		{ "listen", required_argument, NULL, 'l' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct kmock	*k = NULL;
	const char	**topics = NULL;
	size_t		 ntopics = 0, cap = 0, i, len;
	char		 err[512], *name;
	const char	*colon;
	int		 ch, brokers = 1, partitions = 4, n, sig;
	int		 rc = CMD_EXIT_USAGE;
	sigset_t	 set, oset;

	if (cmd_wants_help(self, argc, argv))
		return CMD_EXIT_OK;
	while ((ch = getopt_long(argc, argv, ":v", opts, NULL)) != -1) {
		switch (ch) {
		case 'b':
			if (cmd_parse_int(optarg, 1, KMOCK_MAX_BROKERS,
			    &brokers) == -1) {
				cmd_usage_error(self, "--brokers: \"%s\" is not "
				    "a number from 1 to %d", optarg,
				    KMOCK_MAX_BROKERS);
				goto out;
			}
			break;
		case 'p':
			if (cmd_parse_int(optarg, 1, KMOCK_MAX_PARTITIONS,
			    &partitions) == -1) {
				cmd_usage_error(self, "--partitions: \"%s\" is "
				    "not a number from 1 to %d", optarg,
				    KMOCK_MAX_PARTITIONS);
				goto out;
			}
			break;
		case 't':
			topics = xgrow(topics, &cap, ntopics + 1,
			    sizeof *topics);
			topics[ntopics++] = optarg;
			break;
		case 'l':
			if (!cmd_kmock_listen_ok(optarg)) {
				cmd_usage_error(self, "--listen %s: the mock "
				    "cluster of librdkafka 2.0.2 always listens "
				    "on 127.0.0.1 on a free port; only "
				    "127.0.0.1:0 is possible", optarg);
				goto out;
			}
			break;
		case 'v':
			cmd_verbose();
			break;
		default:
			cmd_bad_option(self, ch, argv);
			goto out;
		}
	}
	if (optind < argc) {
		cmd_usage_error(self, "unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	/* Check every --topic before anything starts. */
	for (i = 0; i < ntopics; i++) {
		colon = strchr(topics[i], ':');
		len = colon != NULL ? (size_t)(colon - topics[i]) :
		    strlen(topics[i]);
		if (!cmd_kmock_topic_ok(topics[i], len)) {
			cmd_usage_error(self, "--topic %s: a topic name is 1 to "
			    "%d of A-Z a-z 0-9 . _ -", topics[i],
			    KMOCK_TOPIC_MAX);
			goto out;
		}
		if (colon != NULL && cmd_parse_int(colon + 1, 1,
		    KMOCK_MAX_PARTITIONS, &n) == -1) {
			cmd_usage_error(self, "--topic %s: the partition count "
			    "must be a number from 1 to %d", topics[i],
			    KMOCK_MAX_PARTITIONS);
			goto out;
		}
		for (size_t j = 0; j < i; j++)
			if (strncmp(topics[j], topics[i], len) == 0 &&
			    (topics[j][len] == '\0' || topics[j][len] == ':')) {
				cmd_usage_error(self, "--topic %s: topic %.*s is "
				    "given twice", topics[i], (int)len,
				    topics[i]);
				goto out;
			}
	}
	log_set_level(cmd_log_level(LOG_INFO));

	/*
	 * Block the stop signals before librdkafka starts its threads, so
	 * they inherit the mask and sigwait() below receives the signal.
	 */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, &oset);

	rc = CMD_EXIT_FAIL;
	if ((k = kmock_new(brokers, err, sizeof err)) == NULL) {
		log_error("kafka-mock", "%s", err);
		goto restore;
	}
	for (i = 0; i < ntopics; i++) {
		colon = strchr(topics[i], ':');
		n = partitions;
		if (colon != NULL)
			cmd_parse_int(colon + 1, 1, KMOCK_MAX_PARTITIONS, &n);
		name = colon != NULL ? xstrndup(topics[i],
		    (size_t)(colon - topics[i])) : xstrdup(topics[i]);
		if (kmock_topic_create(k, name, n, err, sizeof err) == -1) {
			log_error("kafka-mock", "%s", err);
			free(name);
			goto restore;
		}
		log_info("kafka-mock", "topic %s: %d partition(s)", name, n);
		free(name);
	}
	printf("bootstrap: %s\n", kmock_bootstrap(k));
	fflush(stdout);
	log_info("kafka-mock", "%d broker(s) at %s; other topics are created "
	    "with 4 partitions on first use; SIGTERM or Ctrl-C stops",
	    brokers, kmock_bootstrap(k));

	if (sigwait(&set, &sig) != 0)
		sig = SIGTERM;
	log_info("kafka-mock", "%s: stopping", sig == SIGINT ? "SIGINT" :
	    "SIGTERM");
	rc = CMD_EXIT_OK;
restore:
	kmock_free(k);
	pthread_sigmask(SIG_SETMASK, &oset, NULL);
out:
	free(topics);
	return rc;
}

const struct cmd_entry cmd_kafka_mock_entry = {
	.name = "kafka-mock",
	.usage = "kafka-mock [--brokers N] [--partitions N] "
	    "[--topic T[:PARTITIONS]]... [--listen 127.0.0.1:0] [-v]",
	.summary = "run a standalone mock Kafka cluster; prints \"bootstrap: "
	    "HOST:PORT\" first",
	.exec = cmd_kafka_mock_exec,
	.help =
	    "  --brokers N          number of brokers (default 1)\n"
	    "  --partitions N       partitions of --topic topics given without\n"
	    "                       a count (default 4)\n"
	    "  --topic T[:N]        create topic T (repeatable); other topics\n"
	    "                       are auto-created with 4 partitions, which\n"
	    "                       librdkafka 2.0.2 does not let us change\n"
	    "  --listen 127.0.0.1:0 the only address the mock can bind\n"
	    "  -v, --verbose        also show librdkafka's own log\n",
};
