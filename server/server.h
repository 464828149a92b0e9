/* server.h - the HTTP front end: `nano-vllm serve`.
 *
 * Runs on the calling (main) thread: a libuv loop driving libmicrohttpd, the engine on its
 * own scheduler thread. Returns when the server has drained after SIGINT/SIGTERM.
 */
#ifndef NANO_VLLM_SERVER_H
#define NANO_VLLM_SERVER_H

/* argv[0] is "serve". Returns the process exit status: 0 after a clean drain, 1 when the
 * configuration or the model could not be loaded (one line on stderr says what and where),
 * 2 for a usage error. */
int srv_main(int argc, char **argv, char **envp);

#endif
