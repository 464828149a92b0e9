/* serve.c - placeholder until the HTTP front end lands: reports that serving is not built. */
#include <stdio.h>

#include "server/server.h"

int srv_main(int argc, char **argv, char **envp)
{
    (void)argc;
    (void)argv;
    (void)envp;
    fputs("nano-vllm serve: not built yet\n", stderr);
    return 1;
}
