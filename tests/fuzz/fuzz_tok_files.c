/* fuzz_tok_files.c - libFuzzer harness for the tokenizer file loader.
 *
 * The input is vocab.json and merges.txt separated by a line "@@"; with no separator it is
 * a Hugging Face tokenizer.json instead. The files go to a private temp directory and
 * tok_init loads it. A failure must leave a NULL tokenizer and one error line; a success
 * must give a tokenizer that encodes and decodes a few strings back to themselves.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_tmpdir.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "broken promise: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *sep = memmem(text, size, "\n@@\n", 4);
    if (sep) {
        fuzz_dir_put("vocab.json", text, (size_t)(sep - text));
        fuzz_dir_put("merges.txt", sep + 4, size - (size_t)(sep - text) - 4);
        fuzz_dir_put("tokenizer.json", NULL, (size_t)-1);
    } else {
        fuzz_dir_put("vocab.json", NULL, (size_t)-1);
        fuzz_dir_put("merges.txt", NULL, (size_t)-1);
        fuzz_dir_put("tokenizer.json", text, size);
    }

    tok_t *t = (tok_t *)1;
    char err[256] = "";
    int rc = tok_init(&t, fuzz_dir(), err, sizeof(err));
    if (rc != 0) {
        check(rc < 0 && t == NULL, "a failed tok_init leaves *out NULL");
        if (err[0] == '\0' || strchr(err, '\n') != NULL)
            fprintf(stderr, "tok_init error (rc %d): '%s'\n", rc, err);
        check(err[0] != '\0' && strchr(err, '\n') == NULL, "one error line");
        return 0;
    }
    static const char *const samples[] = {"", "a", "hello world", " \n\t  x", "\xff\xfe",
                                          "<|endoftext|>", "caf\xc3\xa9 123"};
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        size_t len = strlen(samples[i]);
        if (tok_encode(t, samples[i], len, &ids, &n) != 0) {
            free(ids);
            continue; /* a vocabulary may lack bytes a sample needs */
        }
        char *back = NULL;
        size_t blen = 0;
        check(tok_decode(t, ids, n, &back, &blen) == 0, "decode of encoded ids succeeds");
        free(back);
        free(ids);
    }
    tok_free(t);
    return 0;
}
