/* config_print.c - writes the settings table out: cfg_print (the config-file format),
 * --help and the README's Markdown table. Same rows as config.c reads; main thread only.
 */
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "config/config_parse.h"
#include "config/config_table.h"

static const void *cfield(const cfg_t *c, const cfg_opt_t *o)
{
    return (const char *)c + o->offset;
}

/* The value of a setting as it would be typed; "" when unset. */
static void value_text(const cfg_t *c, const cfg_opt_t *o, char *buf, size_t n)
{
    switch (o->type) {
    case CFG_T_STR: {
        const char *s = *(char *const *)cfield(c, o);
        snprintf(buf, n, "%s", s ? s : "");
        return;
    }
    case CFG_T_INT:
        snprintf(buf, n, "%d", *(const int *)cfield(c, o));
        return;
    case CFG_T_SIZE:
        cfg_format_size(*(const size_t *)cfield(c, o), buf, n);
        return;
    case CFG_T_DOUBLE:
        snprintf(buf, n, "%.17g", *(const double *)cfield(c, o));
        return;
    case CFG_T_ENUM: {
        int k = *(const int *)cfield(c, o);
        snprintf(buf, n, "%s", k >= 0 && k < cfg_opt_n_choices(o) ? o->choices[k] : "?");
        return;
    }
    case CFG_T_BOOL:
        snprintf(buf, n, "%s", *(const int *)cfield(c, o) ? "true" : "false");
        return;
    }
    buf[0] = '\0';
}

void cfg_print(const cfg_t *c, FILE *out)
{
    for (size_t i = 0; i < cfg_n_opts; i++) {
        const cfg_opt_t *o = &cfg_opts[i];
        if (o->flags & CFG_F_NOFILE)
            continue;
        char val[1024];
        value_text(c, o, val, sizeof(val));
        if ((o->flags & CFG_F_SECRET) && val[0])
            fprintf(out, "%s = ********\n", o->key);
        else
            cfg_write_value_line(out, o->key, val);
    }
}

/* Writes text word-wrapped to 80 columns, each line indented by indent spaces. */
static void write_wrapped(FILE *out, const char *text, int indent)
{
    const int width = 80 - indent;
    while (*text) {
        int n = (int)strlen(text);
        if (n > width) {
            n = width;
            while (n > 0 && text[n] != ' ')
                n--;
            if (n == 0)
                n = width;
        }
        fprintf(out, "%*s%.*s\n", indent, "", n, text);
        text += n;
        while (*text == ' ')
            text++;
    }
}

void cfg_print_help(FILE *out, const char *command)
{
    fprintf(out,
            "usage: nano-vllm %s [OPTIONS] MODEL_DIR\n"
            "\n"
            "Each setting comes from, lowest first: its default, the --config file, the\n"
            "environment variable, the command-line flag. Flags take '--flag VALUE' or\n"
            "'--flag=VALUE' (a switch such as --no-ui takes none); sizes take a K, M, G or\n"
            "T suffix (powers of 1024).\n"
            "\n",
            command);
    for (size_t i = 0; i < cfg_n_opts; i++) {
        const cfg_opt_t *o = &cfg_opts[i];
        if ((o->flags & CFG_F_POSITIONAL) || !o->metavar)
            fprintf(out, "  %s\n", o->flag);
        else
            fprintf(out, "  %s %s\n", o->flag, o->metavar);
        write_wrapped(out, o->help, 8);
        if (o->def)
            fprintf(out, "        default %s; env %s\n", o->def, o->env);
        else
            fprintf(out, "        env %s\n", o->env);
    }
    fputs("  -h, --help\n        show this help and exit\n", out);
}

void cfg_print_markdown(FILE *out)
{
    fputs("| setting | flag | environment | default | meaning |\n"
          "| --- | --- | --- | --- | --- |\n",
          out);
    for (size_t i = 0; i < cfg_n_opts; i++) {
        const cfg_opt_t *o = &cfg_opts[i];
        char flag[80];
        if (o->flags & CFG_F_POSITIONAL)
            snprintf(flag, sizeof(flag), "`%s` (argument)", o->flag);
        else if (!o->metavar)
            snprintf(flag, sizeof(flag), "`%s`", o->flag);
        else
            snprintf(flag, sizeof(flag), "`%s %s`", o->flag, o->metavar);
        /* A '|' would end the cell: the enum metavars are escaped. */
        fprintf(out, "| %s | ", (o->flags & CFG_F_NOFILE) ? "—" : o->key);
        for (const char *p = flag; *p; p++) {
            if (*p == '|')
                fputc('\\', out);
            fputc(*p, out);
        }
        fprintf(out, " | `%s` | %s%s%s | %s |\n", o->env, o->def ? "`" : "",
                o->def ? o->def : "unset", o->def ? "`" : "", o->help);
    }
}
