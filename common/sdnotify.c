/*
 * sdnotify: the systemd notification protocol without libsystemd (see
 * sdnotify.h).
 *
 * systemd passes the path of a datagram socket in $NOTIFY_SOCKET: a file
 * system path, or an abstract socket written with a leading '@'.  Each
 * notification is one datagram of newline-separated "KEY=VALUE" lines.
 * A socket is opened per message: notifications are rare (start, stop,
 * reload, the watchdog every few seconds), and keeping no descriptor
 * means no state and nothing to leak into child processes.
 */
#include "common/sdnotify.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/*
 * Send one state string to $NOTIFY_SOCKET.  Returns 0 when sent or when
 * there is no socket to send to (not run by systemd), -1 on a bad address
 * or a failed send (errno set).  Thread-safe.
 */
int
sdnotify(const char *state)
{
	const char		*path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un	 sun;
	socklen_t		 salen;
	size_t			 plen, slen = strlen(state);
	ssize_t			 n;
	int			 fd, saved;

	if (path == NULL || *path == '\0')
		return 0;
	plen = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || plen >= sizeof sun.sun_path) {
		errno = EINVAL;
		return -1;
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, plen);
	if (path[0] == '@')
		sun.sun_path[0] = '\0';	/* abstract namespace */
	/* Abstract names are not NUL-terminated: the length says where they end. */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
	    (path[0] == '/'));

	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	n = sendto(fd, state, slen, MSG_NOSIGNAL, (struct sockaddr *)&sun,
	    salen);
	saved = errno;
	close(fd);
	if (n < 0 || (size_t)n != slen) {
		errno = n < 0 ? saved : EMSGSIZE;
		return -1;
	}
	return 0;
}

/*
 * The watchdog interval systemd asks for, from $WATCHDOG_USEC, or 0 when
 * it is unset, malformed, or meant for another process ($WATCHDOG_PID).
 * Thread-safe.
 */
uint64_t
sdnotify_watchdog_usec(void)
{
	const char	*s = getenv("WATCHDOG_USEC"), *p;
	char		*end;
	uint64_t	 usec;
	uintmax_t	 pid;

	if (s == NULL || *s < '0' || *s > '9')
		return 0;
	errno = 0;
	usec = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return 0;
	if ((p = getenv("WATCHDOG_PID")) != NULL) {
		errno = 0;
		pid = strtoumax(p, &end, 10);
		if (errno != 0 || *end != '\0' || pid != (uintmax_t)getpid())
			return 0;
	}
	return usec;
}
