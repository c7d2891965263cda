"""The playground (GET / of `rerank serve`) in a real browser.

Drives Debian's chromium with Playwright against two running servers on the
tiny fixture model, one without and one with --api-key (run.sh starts them),
and checks what the page renders against direct POST /v1/rerank calls: the
order of the rows, each row's passage and its score as the API returned it to
4 decimals, the elapsed time and token count from the response headers, the
API's error messages (empty passages, a missing or wrong key), a phone-width
layout without sideways scrolling, and the dark colour scheme.

    python playground.py --plain URL --keyed URL --key KEY [--screenshot PNG]
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright


def api(base, body, key=None):
    """A direct POST /v1/rerank: (status, JSON answer, headers)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(
        base + "v1/rerank", data=json.dumps(body).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def expected_rows(answer):
    return [
        (r["document"]["text"], f"{r['relevance_score']:.4f}")
        for r in answer["results"]
    ]


def rendered_rows(page):
    return [
        (row.locator(".text").inner_text(), row.locator(".score").inner_text())
        for row in page.locator("#results .result").all()
    ]


def rank_and_wait(page, rows=None):
    """Clicks Rank and waits for the answer: `rows` rows, or an error."""
    with page.expect_response(lambda r: r.url.endswith("/v1/rerank")) as response:
        page.click("#rank")
    response = response.value
    if rows is not None:
        # Polled from here, not with page.wait_for_function: that re-evaluates
        # its predicate with `new Function` inside the page, which the
        # playground's Content-Security-Policy (no 'unsafe-eval') refuses
        # whenever the rows are not there at the first check. Each count()
        # is a one-shot query the policy does not apply to.
        results = page.locator("#results .result")
        deadline = time.monotonic() + 30
        while results.count() != rows:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{results.count()} result rows after 30 s, expected {rows}"
                )
            time.sleep(0.05)
    return response


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok   {what}")


def fill(page, query, passages):
    page.fill("#query", query)
    page.fill("#passages", "\n".join(passages))


def plain_server(browser, base, screenshot):
    page = browser.new_page(viewport={"width": 900, "height": 800}, color_scheme="light")
    page.goto(base)
    # 1. The prefilled example (the guide's 首都 query), as is.
    query = page.input_value("#query")
    passages = [p for p in page.input_value("#passages").split("\n") if p.strip()]
    check(query == "中国的首都是哪里？" and len(passages) == 5, "prefilled with the guide's example")
    response = rank_and_wait(page, rows=5)
    status, answer, headers = api(base, {"query": query, "documents": passages, "return_documents": True})
    check(status == 200, "the direct call succeeds")
    got = rendered_rows(page)
    check(got == expected_rows(answer), f"rendered rows equal the API's order and scores: {got}")
    check(
        page.inner_text("#tokens").strip() == f"· {headers['x-compute-tokens']} tokens"
        and headers["x-compute-tokens"] == str(answer["usage"]["total_tokens"]),
        f"token count from x-compute-tokens: {page.inner_text('#tokens')!r}",
    )
    check(
        page.inner_text("#elapsed") == f"{response.headers['x-total-time']} ms",
        f"elapsed time from x-total-time: {page.inner_text('#elapsed')!r}",
    )
    if screenshot:
        page.wait_for_timeout(900)  # the bars' animation
        page.screenshot(path=screenshot, full_page=True)
        print(f"ok   screenshot {screenshot}")

    # 2. Own text, with top-n and raw logits.
    texts = ["hi", "The giant panda is a bear.", "", "Pandas eat bamboo.", "what is panda?"]
    fill(page, "what is panda?", texts)
    page.fill("#top-n", "3")
    page.check("#raw")
    rank_and_wait(page, rows=3)
    status, answer, _ = api(
        base,
        {
            "query": "what is panda?",
            "documents": [t for t in texts if t],
            "top_n": 3,
            "raw_scores": True,
            "return_documents": True,
        },
    )
    got = rendered_rows(page)
    check(status == 200 and got == expected_rows(answer), f"typed query, top-n 3, raw logits: {got}")

    # 3. An error: the API's own message.
    page.fill("#passages", "\n \n")
    rank_and_wait(page)
    page.wait_for_selector("#error.shown")
    status, answer, _ = api(base, {"query": "what is panda?", "documents": [], "return_documents": True})
    check(status == 400 and answer["error_type"] == "empty", "the API refuses no documents")
    check(
        page.inner_text("#error") == answer["error"] and page.locator("#results .result").count() == 0,
        f"the error shown is the API's message: {page.inner_text('#error')!r}",
    )
    page.close()

    # 4. A phone: no sideways scrolling, the button on screen.
    phone = browser.new_page(viewport={"width": 360, "height": 740}, color_scheme="dark")
    phone.goto(base)
    rank_and_wait(phone, rows=5)
    width = phone.evaluate("document.documentElement.scrollWidth")
    check(width <= 360, f"phone width: the page is {width} px wide in a 360 px viewport")
    box = phone.locator("#rank").bounding_box()
    check(box["x"] >= 0 and box["x"] + box["width"] <= 360, "phone width: the Rank button fits")
    # 5. prefers-color-scheme: dark backgrounds in the dark scheme.
    dark = phone.evaluate("getComputedStyle(document.body).backgroundColor")
    light_page = browser.new_page(color_scheme="light")
    light_page.goto(base)
    light = light_page.evaluate("getComputedStyle(document.body).backgroundColor")
    check(dark != light and dark == "rgb(18, 18, 20)", f"dark scheme {dark}, light {light}")
    phone.close()
    light_page.close()


def keyed_server(browser, base, key):
    page = browser.new_page()
    page.goto(base)  # the page itself needs no key
    query, texts = "中国的首都是哪里？", ["北京是中国的政治中心和首都。", "首都机场很大。", "hi"]
    fill(page, query, texts)
    body = {"query": query, "documents": texts, "return_documents": True}
    status, unauthorized, _ = api(base, body)
    check(status == 401, "the keyed server refuses a call without the key")
    for typed in ["", key + "-wrong"]:
        page.fill("#key", typed)
        rank_and_wait(page)
        page.wait_for_selector("#error.shown")
        check(
            page.inner_text("#error") == unauthorized["error"],
            f"key {typed!r}: the API's 401 message shown: {page.inner_text('#error')!r}",
        )
    page.fill("#key", key)
    rank_and_wait(page, rows=3)
    status, answer, _ = api(base, body, key=key)
    got = rendered_rows(page)
    check(status == 200 and got == expected_rows(answer), f"with the key: rows equal the API's: {got}")
    check(not page.locator("#error").is_visible(), "with the key: no error shown")
    page.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plain", required=True, help="base URL of a server without --api-key")
    ap.add_argument("--keyed", required=True, help="base URL of a server with --api-key")
    ap.add_argument("--key", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--screenshot")
    args = ap.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        try:
            plain_server(browser, args.plain, args.screenshot)
            keyed_server(browser, args.keyed, args.key)
        finally:
            browser.close()
    print("browser test: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
