/* log.c - formats and writes the server's log lines (see log.h). */
#include "server/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The log settings, the server's only globals: written once by srv_log_setup on the main
 * thread before other threads start, read-only afterwards. */
static int log_json;
static int log_min_level = SRV_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void srv_log_setup(int json, int min_level)
{
    log_json = json;
    log_min_level = min_level;
}

/* Appends s to buf as the inside of a JSON string. */
static size_t json_escape(char *buf, size_t cap, size_t pos, const char *s)
{
    for (; *s && pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[pos++] = '\\';
            buf[pos++] = (char)c;
        } else if (c < 0x20) {
            pos += (size_t)snprintf(buf + pos, cap - pos, "\\u%04x", c);
        } else {
            buf[pos++] = (char)c;
        }
    }
    return pos;
}

void srv_log(int level, const char *component, const char *req_id, const char *fmt, ...)
{
    if (level < log_min_level)
        return;
    if (level < SRV_LOG_DEBUG || level > SRV_LOG_ERROR)
        level = SRV_LOG_ERROR;

    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    char line[4096];
    size_t pos;
    if (log_json) {
        pos =
            (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"",
                             when, level_names[level]);
        pos = json_escape(line, sizeof(line), pos, component);
        if (req_id) {
            pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "\",\"request_id\":\"");
            pos = json_escape(line, sizeof(line), pos, req_id);
        }
        pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "\",\"msg\":\"");
        pos = json_escape(line, sizeof(line), pos, msg);
        pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "\"}\n");
    } else {
        pos = (size_t)snprintf(line, sizeof(line), "%s %-5s %s%s%s %s\n", when, level_names[level],
                               component, req_id ? " " : "", req_id ? req_id : "", msg);
    }
    if (pos >= sizeof(line)) {
        pos = sizeof(line) - 1;
        line[pos - 1] = '\n';
    }
    /* One write per line: lines of two threads never mix. A failed log write has nowhere
     * to be reported, so its result is ignored on purpose. */
    ssize_t w = write(STDERR_FILENO, line, pos);
    (void)w;
}
