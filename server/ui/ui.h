/* ui.h - the playground page served at / (private to server/).
 *
 * server/ui/index.html is turned into C at build time by server/ui/embed.py: the page's bytes
 * and the Content-Security-Policy that allows exactly its inline <script> and <style> blocks (by
 * their SHA-256). Read-only data; any thread.
 */
#ifndef NANO_VLLM_SERVER_UI_H
#define NANO_VLLM_SERVER_UI_H

#include <stddef.h>

extern const unsigned char ui_page[]; /* (ui_page_len) UTF-8 HTML, not NUL-terminated */
extern const size_t ui_page_len;
extern const char ui_csp[]; /* the Content-Security-Policy header's value */

#endif
