/* config_table.h - private to config/: the shape of a row of the settings table.
 *
 * config.c holds the table (cfg_opts) and reads values into a cfg_t; config_print.c writes
 * them out (cfg_print, --help, Markdown). Both walk the same rows.
 */
#ifndef NANO_VLLM_CONFIG_TABLE_H
#define NANO_VLLM_CONFIG_TABLE_H

#include <stddef.h>

/* CFG_T_BOOL is an int field (0/1) set by a flag that takes no value ("--no-ui"; "--no-ui=false"
 * also works), or by true/false, yes/no, on/off, 1/0 in a config file or the environment. */
enum cfg_opt_type { CFG_T_STR, CFG_T_INT, CFG_T_SIZE, CFG_T_DOUBLE, CFG_T_ENUM, CFG_T_BOOL };

enum cfg_opt_flags {
    CFG_F_NULLABLE = 1,   /* empty value = unset (NULL) */
    CFG_F_POSITIONAL = 2, /* given on the command line as a bare argument, not a flag */
    CFG_F_NOFILE = 4,     /* cannot be set in a config file */
    CFG_F_SECRET = 8,     /* masked by cfg_print */
};

typedef struct cfg_opt {
    const char *key;     /* config-file key and cfg_print name */
    const char *flag;    /* "--port"; for CFG_F_POSITIONAL the argument's name */
    const char *env;     /* "NANO_VLLM_PORT" */
    const char *metavar; /* what the value is, for --help; NULL for CFG_T_BOOL */
    int type;            /* enum cfg_opt_type */
    int flags;           /* enum cfg_opt_flags */
    size_t offset;       /* of the field in cfg_t */
    const char *def;     /* default, as it would be typed; NULL = unset */
    double min, max;     /* CFG_T_INT, CFG_T_SIZE, CFG_T_DOUBLE: inclusive range */
    const char *const *choices; /* CFG_T_ENUM: NULL-terminated names; the field holds the index
                                   (CFG_T_ENUM) or a copy of the name (CFG_T_STR with choices) */
    const char *help;
} cfg_opt_t;

/* The table, in --help order, and its length. */
extern const cfg_opt_t cfg_opts[];
extern const size_t cfg_n_opts;

/* Number of names in o->choices. */
int cfg_opt_n_choices(const cfg_opt_t *o);

#endif
