/* config_parse.c - strict value parsers and the "key = value" config-file reader.
 *
 * These take text from outside (files, environment, argv): every input, however malformed,
 * gets a return code and never a crash; the file reader is a fuzz target (tests/fuzz).
 */
#include "config/config_parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

int cfg_parse_int(const char *s, long long *out)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return -EINVAL;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        return -ERANGE;
    *out = v;
    return 0;
}

int cfg_parse_size(const char *s, size_t *out)
{
    const char *p = s;
    uint64_t whole = 0;
    int overflow = 0;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (whole > (UINT64_MAX - d) / 10)
            overflow = 1;
        else
            whole = whole * 10 + d;
    }
    double frac = 0, scale = 0.1;
    int has_frac = 0;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        for (; isdigit((unsigned char)*p); p++, scale /= 10)
            frac += (*p - '0') * scale;
        has_frac = 1;
    }
    int shift = 0;
    switch (toupper((unsigned char)*p)) {
    case 'K': shift = 10; p++; break;
    case 'M': shift = 20; p++; break;
    case 'G': shift = 30; p++; break;
    case 'T': shift = 40; p++; break;
    default: break;
    }
    if (shift && (*p == 'i' || *p == 'I'))
        p++;
    if (*p == 'b' || *p == 'B')
        p++;
    if (*p != '\0' || (has_frac && !shift))
        return -EINVAL; /* a fraction of a byte means a typo */
    if (overflow || (shift && whole > (UINT64_MAX >> shift)))
        return -ERANGE;
    uint64_t v = whole << shift;
    if (has_frac) {
        double extra = floor(frac * (double)((uint64_t)1 << shift));
        if ((double)v + extra >= 18446744073709551616.0)
            return -ERANGE;
        v += (uint64_t)extra;
    }
    if (v > SIZE_MAX)
        return -ERANGE;
    *out = (size_t)v;
    return 0;
}

int cfg_parse_double(const char *s, double *out)
{
    if (!*s)
        return -EINVAL;
    for (const char *q = s; *q; q++)
        if (!strchr("0123456789+-.eE", *q))
            return -EINVAL; /* keeps out hex floats, "nan", "inf" and blanks */
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end != '\0' || end == s || !isfinite(v) || errno == ERANGE)
        return -EINVAL;
    *out = v;
    return 0;
}

int cfg_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -EINVAL;
}

void cfg_format_size(size_t v, char *buf, size_t n)
{
    static const char units[] = "TGMK";
    for (int i = 0; i < 4; i++) {
        unsigned shift = (unsigned)(40 - 10 * i);
        uint64_t unit = (uint64_t)1 << shift;
        if (v != 0 && (uint64_t)v % unit == 0) {
            snprintf(buf, n, "%llu%c", (unsigned long long)((uint64_t)v >> shift), units[i]);
            return;
        }
    }
    snprintf(buf, n, "%llu", (unsigned long long)v);
}

/* Blanks around keys and values; a stray CR or form feed counts, so a value never ends in
 * one that the next read would strip. */
static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

void cfg_write_value_line(FILE *out, const char *key, const char *value)
{
    size_t n = strlen(value);
    if (n == 0) {
        fprintf(out, "%s =\n", key);
        return;
    }
    int quote = value[0] == '"' || is_blank(value[0]) || is_blank(value[n - 1]) ||
                strchr(value, '#') != NULL;
    if (quote && !strchr(value, '"'))
        fprintf(out, "%s = \"%s\"\n", key, value);
    else
        fprintf(out, "%s = %s\n", key, value);
}

/* Splits one line (no newline) into key and value, in place. 0, 1 for a blank or comment
 * line, or -EINVAL with err. */
static int parse_line(char *line, const char *path, int lineno, char **key, char **value,
                      char *err, size_t errlen)
{
    char *p = line;
    while (is_blank(*p))
        p++;
    if (*p == '\0' || *p == '#')
        return 1;
    char *k = p;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == '-')
        p++;
    char *kend = p;
    while (is_blank(*p))
        p++;
    if (kend == k || *p != '=') {
        snprintf(err, errlen, "%s:%d: expected 'key = value', got '%.60s'", path, lineno, k);
        return -EINVAL;
    }
    *kend = '\0';
    p++;
    while (is_blank(*p))
        p++;
    char *v = p, *vend;
    if (*p == '"') {
        v = ++p;
        char *close = strchr(p, '"');
        if (!close) {
            snprintf(err, errlen, "%s:%d: %s: unterminated quote", path, lineno, k);
            return -EINVAL;
        }
        vend = close;
        p = close + 1;
        while (is_blank(*p))
            p++;
        if (*p != '\0' && *p != '#') {
            snprintf(err, errlen, "%s:%d: %s: unexpected text after the closing quote: '%.40s'",
                     path, lineno, k, p);
            return -EINVAL;
        }
    } else {
        for (vend = p; *vend && !(*vend == '#' && (vend == v || is_blank(vend[-1]))); vend++)
            ;
        while (vend > v && is_blank(vend[-1]))
            vend--;
    }
    *vend = '\0';
    *key = k;
    *value = v;
    return 0;
}

int cfg_read_file(const char *path, const char *source, cfg_setting_cb cb, void *arg,
                  char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "%s %s: cannot open: %s", source, path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s %s: is a directory", source, path);
        fclose(f);
        return -EISDIR;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)len != strlen(line)) {
            snprintf(err, errlen, "%s:%d: NUL byte in the line", path, lineno);
            rc = -EINVAL;
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        char *start = line;
        if (lineno == 1 && strncmp(start, "\xEF\xBB\xBF", 3) == 0)
            start += 3; /* a UTF-8 byte-order mark, as some editors write */
        char *key, *value;
        int r = parse_line(start, path, lineno, &key, &value, err, errlen);
        if (r < 0)
            rc = r;
        else if (r == 0)
            rc = cb(arg, path, lineno, key, value, err, errlen);
    }
    if (rc == 0 && ferror(f)) {
        int e = errno;
        snprintf(err, errlen, "%s %s: read error: %s", source, path, strerror(e));
        rc = e ? -e : -EIO;
    }
    free(line);
    fclose(f);
    return rc;
}
