/* http_head.c - the limits and framing checks of a request head, made on the access
 * handler's first call, before any body is read: what libmicrohttpd 0.9.75 lets through but
 * a careful HTTP/1.1 server refuses (RFC 9112), answered with the OpenAI error object; and the
 * path of an absolute-form request target.
 *
 * Loop thread only.
 */
#include <stdint.h>
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
    /* The head as libmicrohttpd holds it (see hidden_bytes): [start, end), or NULL. */
    const char *start, *end;
    const char *line_from; /* where the previous header's value ended */
    int folded;            /* a header that is not where its line was (obs-fold) */
    int nul;               /* a NUL followed by more of the value */
} head_info_t;

/* The characters of a header name (RFC 9110 token). */
#define HTTP_TCHAR "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

/* libmicrohttpd 0.9.75 keeps the request head in one buffer, each line's CR LF overwritten with
 * NULs and each header's name and value pointing into it; it measures a value with strlen, so a
 * NUL inside a value cuts it short and the bytes after the NUL are silently dropped. RFC 9110
 * §5.5 asks a recipient to reject such a message or to read each NUL as a space. Cutting the
 * value short is the same as the latter (trailing blanks are not part of a value) when only
 * NULs, spaces and tabs follow the cut, so a head is refused when anything else lies between
 * the end of a header's value and the start of the next line. A folded line (obs-fold) makes
 * libmicrohttpd copy the header elsewhere, which RFC 9112 §5.2 also allows a server to refuse. */
static void hidden_bytes(head_info_t *h, const char *to)
{
    if (h->line_from && h->line_from <= to) {
        for (const char *p = h->line_from; p < to && !h->nul; p++)
            if (*p != '\0' && *p != ' ' && *p != '\t')
                h->nul = 1;
    } else if (h->line_from) {
        h->folded = 1;
    }
}

static enum MHD_Result head_cb(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                               const char *value, size_t value_size)
{
    head_info_t *h = cls;
    if (kind == MHD_GET_ARGUMENT_KIND) {
        h->target += key_size + (value ? value_size + 1 : 0) + 1; /* "key=value&" */
        return MHD_YES;
    }
    h->bytes += key_size + value_size + 4;
    if (h->start && kind == MHD_HEADER_KIND && value) {
        if (key < h->start || value + value_size > h->end || key > value) {
            h->folded = 1;
            h->line_from = NULL;
        } else {
            hidden_bytes(h, key);
            h->line_from = value + value_size;
        }
    }
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

int http_head_refused(http_req_t *r, const char *method, const char *url, const char *version)
{
    head_info_t h = {.target = strlen(url)};
    /* The head starts with the method and is header_size bytes long, the final empty line
     * included. */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (ci && ci->header_size > 0 && ci->header_size <= HTTP_MHD_MEMORY) {
        h.start = method;
        h.end = method + ci->header_size;
    }
    MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND, head_cb, &h);
    if (h.start)
        hidden_bytes(&h, h.end);
    size_t alen = 0;
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
    } else if (h.nul) {
        status = MHD_HTTP_BAD_REQUEST;
        snprintf(msg, sizeof(msg), "a header value has a NUL byte in it");
    } else if (h.folded) {
        status = MHD_HTTP_BAD_REQUEST;
        snprintf(msg, sizeof(msg), "a header is folded over two lines (obs-fold)");
    } else if (url != http_target_path(url, &alen) && alen == 0) {
        status = MHD_HTTP_BAD_REQUEST;
        snprintf(msg, sizeof(msg), "the absolute-form request target has no host");
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

const char *http_target_path(const char *url, size_t *authority_len)
{
    *authority_len = 0;
    size_t scheme = strncasecmp(url, "http://", 7) == 0    ? 7
                    : strncasecmp(url, "https://", 8) == 0 ? 8
                                                           : 0;
    if (!scheme)
        return url;
    const char *authority = url + scheme;
    *authority_len = strcspn(authority, "/");
    return authority + *authority_len;
}
