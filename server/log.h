/* log.h - the server's log lines: one line per event on stderr, text or JSON.
 *
 * Each line carries a level, a component tag ("http", "engine", "srv" ...) and, when there
 * is one, a request id, so lines written by the loop thread and the loader thread can be
 * told apart. A line is formatted into one buffer and written with one write(2), so lines
 * from two threads never interleave.
 */
#ifndef NANO_VLLM_SERVER_LOG_H
#define NANO_VLLM_SERVER_LOG_H

enum srv_log_level { SRV_LOG_DEBUG = 0, SRV_LOG_INFO, SRV_LOG_WARN, SRV_LOG_ERROR };

/* Chooses text (0) or JSON (1) lines and the lowest level written. Call once on the main
 * thread before any other thread starts; the two values are the only globals of server/. */
void srv_log_setup(int json, int min_level);

/* Writes one line: component and req_id (may be NULL) are tags, the rest a printf format.
 * Any thread. */
void srv_log(int level, const char *component, const char *req_id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
