/* generate.h - `nano-vllm generate`: offline batch generation through the scheduler. */
#ifndef NANO_VLLM_GENERATE_H
#define NANO_VLLM_GENERATE_H

/* argv[0] is "generate". Returns the process exit status. */
int generate_main(int argc, char **argv);

#endif
