/* config_parse.h - private to config/: value parsers, the config-file reader, value output.
 *
 * Pure functions of their arguments; no allocation survives a call. The value parsers are
 * strict: the whole string must be the value (no surrounding blanks, no trailing text).
 */
#ifndef NANO_VLLM_CONFIG_PARSE_H
#define NANO_VLLM_CONFIG_PARSE_H

#include <stddef.h>
#include <stdio.h>

/* Decimal integer with an optional sign. 0, -EINVAL (not an integer) or -ERANGE (does not
 * fit a long long). */
int cfg_parse_int(const char *s, long long *out);

/* Bytes: "4096", or a number with a K, M, G or T suffix in powers of 1024, any case, with an
 * optional "i" and "B" ("512M", "2G", "1.5GiB", "64kb"). Fractions are rounded down to a
 * byte. 0, -EINVAL or -ERANGE (beyond SIZE_MAX). */
int cfg_parse_size(const char *s, size_t *out);

/* A finite decimal number ("30", "2.5", "1e3"); no hex, NaN or infinity. 0 or -EINVAL. */
int cfg_parse_double(const char *s, double *out);

/* true/false, yes/no, on/off, 1/0 (any case) into 1/0. 0 or -EINVAL. */
int cfg_parse_bool(const char *s, int *out);

/* Writes v the way a user would type it: the largest of T, G, M, K that divides it, else
 * plain bytes ("1G", "1536K", "1000"). */
void cfg_format_size(size_t v, char *buf, size_t n);

/* Writes "key = value\n" so that cfg_read_file reads value back: quoted when it has a '#',
 * leading or trailing blanks or a leading quote; "key =\n" when value is empty. */
void cfg_write_value_line(FILE *out, const char *key, const char *value);

/* Called for each "key = value" line; returns 0 or a negative errno with err written. */
typedef int (*cfg_setting_cb)(void *arg, const char *path, int line, const char *key,
                              const char *value, char *err, size_t errlen);

/* Reads a config file: UTF-8 text, one "key = value" per line; blank lines and lines whose
 * first non-blank character is '#' are ignored; an unquoted value ends at a '#' that starts it
 * or follows a blank (a comment) and loses its trailing blanks; a value in double quotes is taken as is
 * (no escapes) and may hold '#' and blanks. Calls cb for each setting in file order.
 * source names where the path came from ("--config") for open errors. Returns 0, cb's error,
 * -EINVAL for a malformed line ("path:LINE: ..."), or -errno when the file cannot be read. */
int cfg_read_file(const char *path, const char *source, cfg_setting_cb cb, void *arg,
                  char *err, size_t errlen);

#endif
