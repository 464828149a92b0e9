/* serve_stub.c - stands in for serve.c in the binary until the engine service (eng_init,
 * eng_start, eng_submit ...) is built: the server library compiles and is unit-tested, but
 * `nano-vllm serve` cannot link without the engine. Removed when the engine lands. */
#include <stdio.h>

#include "server/server.h"

int srv_main(int argc, char **argv, char **envp)
{
    (void)argc;
    (void)argv;
    (void)envp;
    fputs("nano-vllm serve: not built yet (waiting for the engine service)\n", stderr);
    return 1;
}
