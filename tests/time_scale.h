/* time_scale.h - TEST_TIME_SCALE, the factor a test multiplies its wall-clock bounds by: 1,
 * or more when this test binary was built with a sanitizer, which slows everything it runs
 * (CI runs the suites under ASan+UBSan and under TSan, with meson's --timeout-multiplier 3 and
 * 4). A bound that says "noticed at once" or "the thread sleeps" holds as well with the factor,
 * and a test that can say the same with a count does so instead. */
#ifndef NANO_VLLM_TESTS_TIME_SCALE_H
#define NANO_VLLM_TESTS_TIME_SCALE_H

#if defined(__SANITIZE_THREAD__)
#define TEST_TIME_SCALE 5
#elif defined(__SANITIZE_ADDRESS__)
#define TEST_TIME_SCALE 3
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TIME_SCALE 5
#elif __has_feature(address_sanitizer)
#define TEST_TIME_SCALE 3
#endif
#endif
#ifndef TEST_TIME_SCALE
#define TEST_TIME_SCALE 1
#endif

#endif
