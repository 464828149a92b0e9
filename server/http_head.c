/* http_head.c - the limits and framing checks of a request head, made on the access
 * handler's first call, before any body is read: what libmicrohttpd 0.9.75 lets through but
 * a careful HTTP/1.1 server refuses (RFC 9112), answered with the OpenAI error object.
 *
 * Loop thread only.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "server/http_int.h"

typedef struct head_info {
    size_t bytes;  /* request headers, as "Name: value\r\n" */
    size_t target; /* the path and query arguments */
    int n_host;    /* Host headers */
    int n_length;  /* Content-Length headers */
    int length_differs;
    const char *length;   /* the first Content-Length */
    const char *encoding; /* the last Transfer-Encoding */
    int bad_field;        /* a name that is not a token, or a NUL inside a value */
} head_info_t;

/* The characters of a header name (RFC 9110 token). */
#define HTTP_TCHAR "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

static enum MHD_Result head_cb(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                               const char *value, size_t value_size)
{
    head_info_t *h = cls;
    if (kind == MHD_GET_ARGUMENT_KIND) {
        h->target += key_size + (value ? value_size + 1 : 0) + 1; /* "key=value&" */
        return MHD_YES;
    }
    h->bytes += key_size + value_size + 4;
    if (!h->bad_field && (key_size == 0 || strspn(key, HTTP_TCHAR) != key_size ||
                          (value && strlen(value) != value_size)))
        h->bad_field = 1;
    if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        h->n_host++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (h->n_length++ && strcmp(h->length, value ? value : "") != 0)
            h->length_differs = 1;
        if (!h->length)
            h->length = value ? value : "";
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        h->encoding = value ? value : "";
    }
    return MHD_YES;
}

int http_head_refused(http_req_t *r, const char *url, const char *version)
{
    head_info_t h = {.target = strlen(url)};
    MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND, head_cb, &h);
    int status = 0;
    char msg[200];
    if (h.target > HTTP_MAX_TARGET) {
        status = MHD_HTTP_URI_TOO_LONG;
        snprintf(msg, sizeof(msg), "the request target is longer than %zu bytes", HTTP_MAX_TARGET);
    } else if (h.bytes > HTTP_MAX_HEAD) {
        status = MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE;
        snprintf(msg, sizeof(msg), "the request headers are larger than %zu bytes", HTTP_MAX_HEAD);
    } else if (h.bad_field) {
        status = MHD_HTTP_BAD_REQUEST;
        snprintf(msg, sizeof(msg), "a header name has a blank or another byte not allowed in it");
    } else if (strcmp(version, MHD_HTTP_VERSION_1_0) != 0 && h.n_host != 1) {
        status = MHD_HTTP_BAD_REQUEST;
        snprintf(msg, sizeof(msg), "an HTTP/1.1 request needs exactly one Host header (got %d)",
                 h.n_host);
    } else if (h.length_differs) {
        status = MHD_HTTP_BAD_REQUEST;
        snprintf(msg, sizeof(msg), "the Content-Length headers disagree");
    } else if (h.encoding && h.n_length) {
        status = MHD_HTTP_BAD_REQUEST;
        snprintf(msg, sizeof(msg),
                 "a request may not have both Transfer-Encoding and Content-Length");
    } else if (h.encoding && strcasecmp(h.encoding, "chunked") != 0) {
        status = MHD_HTTP_NOT_IMPLEMENTED;
        snprintf(msg, sizeof(msg), "only Transfer-Encoding: chunked is supported");
    }
    if (!status)
        return 0;
    char body[320];
    int n = snprintf(body, sizeof(body),
                     "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\","
                     "\"param\":null,\"code\":null}}",
                     msg);
    static const char *const close_hdr[] = {MHD_HTTP_HEADER_CONNECTION, "close", NULL};
    r->in_access = 1;
    http_reply(r, status, "application/json", body, (size_t)n, close_hdr);
    r->in_access = 0;
    return 1;
}
