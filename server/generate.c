/* generate.c - placeholder until offline generation lands. */
#include <stdio.h>

#include "server/generate.h"

int generate_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("nano-vllm generate: not built yet\n", stderr);
    return 1;
}
