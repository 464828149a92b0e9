/* test_api_chat.c - the chat completions request parser (server/api_chat.c) on good and bad
 * bodies: the normalised messages, the chat-only fields, and every refusal with the field it
 * names (roles, content types, empty messages, tools, structured output, images).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api_chat.h"
#include "tests/check.h"

static const api_limits_t lim = {"gpt2", 50257, NULL};

static int parse(const char *body, api_chat_t *c, api_error_t *e)
{
    memset(e, 0, sizeof(*e));
    return api_chat_parse(body, strlen(body), &lim, c, e);
}

static void refuse_at(int line, const char *body, int status, const char *param, const char *msg)
{
    api_chat_t c;
    api_error_t e;
    if (parse(body, &c, &e) != -1) {
        fprintf(stderr, "%s:%d: accepted %s\n", __FILE__, line, body);
        check_failed_count++;
        api_chat_free(&c);
        return;
    }
    if (e.status != status || strcmp(e.param, param) != 0 || !strstr(e.message, msg)) {
        fprintf(stderr,
                "%s:%d: %s\n  got status %d param '%s' message '%s'\n  expected status %d "
                "param '%s' message containing '%s'\n",
                __FILE__, line, body, e.status, e.param, e.message, status, param, msg);
        check_failed_count++;
    }
    if (c.messages || c.kwargs || c.p.model) {
        fprintf(stderr, "%s:%d: a refused request kept its fields\n", __FILE__, line);
        check_failed_count++;
    }
}
#define REFUSE(body, status, param, msg) refuse_at(__LINE__, body, status, param, msg)

#define USER "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

static void test_accept(void)
{
    api_chat_t c;
    api_error_t e;
    CHECK_INT_EQ(parse("{" USER "}", &c, &e), 0);
    CHECK_INT_EQ(c.add_generation_prompt, 1);
    CHECK_INT_EQ(c.continue_final_message, 0);
    CHECK_INT_EQ(c.max_tokens_set, 0);
    CHECK_INT_EQ(c.p.logprobs, -1);
    CHECK_INT_EQ(c.p.n_prompts, 0);
    CHECK_INT_EQ((int)json_array_size(c.messages), 1);
    api_chat_free(&c);
    api_chat_free(&c);

    /* Text parts are joined with "\n"; name is kept; other fields are dropped. */
    const char *body =
        "{\"model\":\"gpt2\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"developer\",\"content\":\"\"},{\"role\":\"user\",\"name\":\"bob\","
        "\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
        "{\"role\":\"assistant\",\"content\":\"ok\",\"tool_calls\":[]}],"
        "\"max_completion_tokens\":7,\"max_tokens\":9,\"logprobs\":true,\"top_logprobs\":3,"
        "\"n\":2,\"stop\":[\"x\"],\"seed\":5,\"temperature\":0.5,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"response_format\":{\"type\":\"text\"},"
        "\"tools\":[],\"tool_choice\":\"none\",\"add_generation_prompt\":false,"
        "\"continue_final_message\":true,\"chat_template_kwargs\":{\"enable_thinking\":false},"
        "\"user\":\"u\",\"ignore_eos\":true,\"top_k\":5,\"min_p\":0.1,\"logit_bias\":{\"1\":2}}";
    CHECK_INT_EQ(parse(body, &c, &e), 0);
    CHECK_STR_EQ(e.message, "");
    CHECK_INT_EQ(c.p.max_tokens, 7); /* max_completion_tokens wins */
    CHECK_INT_EQ(c.max_tokens_set, 2);
    CHECK_INT_EQ(c.p.logprobs, 3);
    CHECK_INT_EQ(c.p.n, 2);
    CHECK_INT_EQ(c.p.n_stop, 1);
    CHECK_INT_EQ(c.p.stream, 1);
    CHECK_INT_EQ(c.p.include_usage, 1);
    CHECK_INT_EQ(c.p.ignore_eos, 1);
    CHECK_INT_EQ(c.p.sp.top_k, 5);
    CHECK_INT_EQ(c.add_generation_prompt, 0);
    CHECK_INT_EQ(c.continue_final_message, 1);
    CHECK(json_is_false(json_object_get(c.kwargs, "enable_thinking")));
    json_t *u = json_array_get(c.messages, 2);
    CHECK_STR_EQ(json_string_value(json_object_get(u, "content")), "a\nb");
    CHECK_STR_EQ(json_string_value(json_object_get(u, "name")), "bob");
    CHECK(json_object_get(json_array_get(c.messages, 3), "tool_calls") == NULL);
    api_chat_free(&c);

    CHECK_INT_EQ(parse("{" USER ",\"max_tokens\":4,\"logprobs\":true}", &c, &e), 0);
    CHECK_INT_EQ(c.p.max_tokens, 4);
    CHECK_INT_EQ(c.max_tokens_set, 1);
    CHECK_INT_EQ(c.p.logprobs, 0);
    api_chat_free(&c);
}

static void test_refuse(void)
{
    REFUSE("{", 400, "", "invalid JSON");
    REFUSE("[]", 400, "", "must be a JSON object");
    REFUSE("{}", 400, "messages", "'messages' is required");
    REFUSE("{\"messages\":[]}", 400, "messages", "at least one message");
    REFUSE("{\"messages\":\"hi\"}", 400, "messages", "must be a list");
    REFUSE("{\"messages\":[1]}", 400, "messages[0]", "must be an object");
    REFUSE("{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0]", "role' must be a string");
    REFUSE("{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400, "messages[0]",
           "'robot' is not one of system, developer, user, assistant");
    REFUSE("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "messages[0]",
           "tool calling is not implemented");
    REFUSE("{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0]", "content' is missing");
    REFUSE("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages[0].content",
           "must be a string or a list");
    REFUSE("{\"messages\":[{\"role\":\"user\",\"content\":null}]}", 400, "messages[0].content",
           "must be a string or a list");
    REFUSE("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
           "\"image_url\":{\"url\":\"x\"}}]}]}",
           400, "messages[0].content[0]", "'image_url' part: this model takes text only");
    REFUSE("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}", 400,
           "messages[0].content[0]", "takes text only");
    REFUSE("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", 400,
           "messages[0].content[0]", "text' must be a string");
    REFUSE("{\"messages\":[{\"role\":\"user\",\"content\":[\"x\"]}]}", 400,
           "messages[0].content[0]", "string 'type'");
    REFUSE("{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"mood\":1}]}", 400, "messages[0]",
           "unknown field 'messages[0].mood'");
    REFUSE("{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"name\":1}]}", 400, "messages[0]",
           "name' must be a string");
    REFUSE("{" USER ",\"tools\":[{\"type\":\"function\"}]}", 400, "tools",
           "tool calling is not implemented");
    REFUSE("{" USER ",\"tool_choice\":\"auto\"}", 400, "tool_choice", "not supported");
    REFUSE("{" USER ",\"functions\":[{}]}", 400, "functions", "not supported");
    REFUSE("{" USER ",\"response_format\":{\"type\":\"json_object\"}}", 400, "response_format",
           "'json_object' is not supported");
    REFUSE("{" USER ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{}}}", 400,
           "response_format", "'json_schema' is not supported");
    REFUSE("{" USER ",\"max_completion_tokens\":0}", 400, "max_completion_tokens", "between 1 and");
    REFUSE("{" USER ",\"max_tokens\":\"5\"}", 400, "max_tokens", "between 1 and");
    REFUSE("{" USER ",\"top_logprobs\":2}", 400, "top_logprobs", "needs 'logprobs'");
    REFUSE("{" USER ",\"logprobs\":true,\"top_logprobs\":21}", 400, "top_logprobs",
           "between 0 and 20");
    REFUSE("{" USER ",\"logprobs\":3}", 400, "logprobs", "must be a boolean");
    REFUSE("{" USER ",\"prompt\":\"x\"}", 400, "prompt", "chat takes 'messages'");
    REFUSE("{" USER ",\"echo\":true}", 400, "echo", "unknown field");
    REFUSE("{" USER ",\"chat_template_kwargs\":[]}", 400, "chat_template_kwargs",
           "must be an object");
    REFUSE("{" USER ",\"continue_final_message\":true}", 400, "continue_final_message",
           "cannot both be true");
    REFUSE("{" USER ",\"continue_final_message\":true,\"add_generation_prompt\":false}", 400,
           "continue_final_message", "last message to be the assistant's");
    REFUSE("{" USER ",\"model\":\"other\"}", 404, "model", "does not exist");
    REFUSE("{" USER ",\"stream_options\":{\"include_usage\":true}}", 400, "stream_options",
           "only allowed when 'stream' is true");
    REFUSE("{" USER ",\"temperature\":3}", 400, "temperature", "<= 2");
    REFUSE("{" USER ",\"mystery\":1}", 400, "mystery", "unknown field 'mystery'");
    REFUSE("{" USER ",\"chat_template\":\"{{x}}\"}", 400, "chat_template", "not supported");
}

static void test_tokenize(void)
{
    api_chat_t c;
    api_error_t e;
    const char *plain = "{\"prompt\":\"hi\"}";
    CHECK_INT_EQ(api_chat_tokenize_parse(plain, strlen(plain), &lim, &c, &e), 1);
    const char *chat = "{\"model\":\"gpt2\"," USER ",\"add_generation_prompt\":false,"
                       "\"add_special_tokens\":true}";
    CHECK_INT_EQ(api_chat_tokenize_parse(chat, strlen(chat), &lim, &c, &e), 0);
    CHECK_INT_EQ(c.add_generation_prompt, 0);
    CHECK_INT_EQ(c.add_special_tokens, 1);
    CHECK_INT_EQ((int)json_array_size(c.messages), 1);
    api_chat_free(&c);
    const char *badf = "{" USER ",\"max_tokens\":3}";
    CHECK_INT_EQ(api_chat_tokenize_parse(badf, strlen(badf), &lim, &c, &e), -1);
    CHECK_STR_EQ(e.param, "max_tokens");
    const char *badm = "{\"messages\":[]}";
    CHECK_INT_EQ(api_chat_tokenize_parse(badm, strlen(badm), &lim, &c, &e), -1);
    CHECK_STR_EQ(e.param, "messages");
}

int main(void)
{
    test_accept();
    test_refuse();
    test_tokenize();
    if (check_failures()) {
        fprintf(stderr, "test_api_chat: %d check(s) failed\n", check_failures());
        return 1;
    }
    puts("test_api_chat: all passed");
    return 0;
}
