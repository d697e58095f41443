/*
 * sdnotify: the systemd notification protocol (sd_notify(3)) without
 * linking libsystemd: a datagram to $NOTIFY_SOCKET.  A no-op when the
 * daemon is not run by systemd.
 */
#ifndef MLOPSD_SDNOTIFY_H
#define MLOPSD_SDNOTIFY_H

#include <stdint.h>

/* Send a state string such as "READY=1" or "STOPPING=1".  Returns 0, or -1. */
int		 sdnotify(const char *state);
/* The watchdog interval from $WATCHDOG_USEC (0 when not set or not for us). */
uint64_t	 sdnotify_watchdog_usec(void);

#endif
