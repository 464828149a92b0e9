/* main.c - the nano-vllm binary: dispatches to its subcommands. */
#include <stdio.h>
#include <string.h>

#include "server/generate.h"
#include "server/server.h"

static void usage(FILE *out)
{
    fputs("usage: nano-vllm COMMAND [OPTIONS]\n"
          "\n"
          "commands:\n"
          "  serve MODEL_DIR     serve the OpenAI completions API over HTTP\n"
          "  generate MODEL_DIR  generate completions for prompts offline\n"
          "\n"
          "Run 'nano-vllm COMMAND --help' for the options of a command.\n",
          out);
}

int main(int argc, char **argv, char **envp)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "serve") == 0)
        return srv_main(argc - 1, argv + 1, envp);
    if (strcmp(argv[1], "generate") == 0)
        return generate_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        puts("nano-vllm " NANO_VLLM_VERSION);
        return 0;
    }
    fprintf(stderr, "nano-vllm: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
