"""The pairwise LLM judge against a tiny local server speaking /v1/chat/completions: position swapping, the API key
read from the environment and never written, unparseable replies counted, unreachable endpoints a clear error."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest

from eval.judge import judge_pair
from tailor.errors import TailorError
from tailor.schema import JudgeSettings

KEY = "sk-test-0123456789-secret"
ROWS = [{"id": f"r{i}", "reference": f"answer {i}", "messages": json.dumps(
    [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}])} for i in range(6)]


def serve(decide: Callable[[str, str], str]) -> Iterator[tuple[str, list[dict]]]:
    """A /v1/chat/completions server; `decide(answer_a, answer_b)` returns the reply text."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            user = body["messages"][-1]["content"]
            a, b = re.search(r"Answer A:\n(.*?)\n\nAnswer B:\n(.*?)\n\nWhich", user, re.S).groups()
            reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": decide(a, b)}}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fair():
    """Prefers the answer that equals the reference ("answer N"), whatever its position."""
    yield from serve(lambda a, b: "A" if a.startswith("answer") and not b.startswith("answer") else
                     "B" if b.startswith("answer") and not a.startswith("answer") else "TIE")


def test_judge_prefers_the_right_answer_in_both_orders(fair, monkeypatch) -> None:
    url, seen = fair
    monkeypatch.setenv("JUDGE_KEY", KEY)
    tuned = [r["reference"] for r in ROWS[:5]] + ["wrong"]
    other = ["wrong"] * 4 + [ROWS[4]["reference"], ROWS[5]["reference"]]
    settings = JudgeSettings(url=url, model="judge-1", api_key_env="JUDGE_KEY")
    result = judge_pair(ROWS, other, tuned, settings, resamples=500)
    assert (result["wins"], result["losses"], result["ties"]) == (4, 1, 1)
    assert result["win_rate"] == pytest.approx((4 + 0.5) / 6) and result["position_flips"] == 0
    assert result["ci_low"] <= result["win_rate"] <= result["ci_high"]
    assert len(seen) == 12 and {s["path"] for s in seen} == {"/v1/chat/completions"}
    assert all(s["auth"] == f"Bearer {KEY}" and s["body"]["model"] == "judge-1" for s in seen)
    first = seen[0]["body"]["messages"]
    assert first[0]["role"] == "system" and "Reply with exactly one word" in first[0]["content"]
    assert "question" in first[1]["content"] and "<|im_start|>" not in first[1]["content"]
    assert KEY not in json.dumps(result)


def test_position_biased_judge_gives_ties_not_wins() -> None:
    for url, seen in serve(lambda a, b: "A"):  # always the first answer shown
        result = judge_pair(ROWS, ["x"] * 6, ["y"] * 6, JudgeSettings(url=url, model="m"), resamples=500)
        assert result["ties"] == 6 and result["wins"] == 0 and result["position_flips"] == 6
        assert result["win_rate"] == 0.5 and not result["excludes_half"]


def test_unparseable_replies_are_counted_and_excluded() -> None:
    for url, _ in serve(lambda a, b: "I cannot decide" if "3" in a + b else "B"):
        result = judge_pair(ROWS, ["o1", "o2", "o3", "o4", "o5", "o6"], ["t1", "t2", "t3", "t4", "t5", "t6"],
                            JudgeSettings(url=url, model="m", max_rows=4), resamples=500)
        assert result["rows"] == 4 and result["invalid_replies"] == 1 and result["per_row"]["r2"]["score"] is None


def test_missing_key_and_unreachable_endpoint_are_clear_errors(monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(TailorError, match="environment variable NO_SUCH_KEY_VAR is not set"):
        judge_pair(ROWS, ["a"] * 6, ["b"] * 6, JudgeSettings(url="http://127.0.0.1:9/v1", model="m",
                                                             api_key_env="NO_SUCH_KEY_VAR"))
    with pytest.raises(TailorError, match="eval.judge: request to http://127.0.0.1:9/v1 failed"):
        judge_pair(ROWS[:1], ["a"], ["b"], JudgeSettings(url="http://127.0.0.1:9/v1", model="m", timeout_s=2))


def test_judge_in_the_eval_stage_never_writes_the_key(fair, monkeypatch, tmp_path: Path) -> None:
    """Through the recipe: results.json and the reports hold the judge's numbers and the variable's name only."""
    from eval.report import render_html, render_markdown

    url, _ = fair
    monkeypatch.setenv("JUDGE_KEY", KEY)
    settings = JudgeSettings(url=url, model="judge-1", api_key_env="JUDGE_KEY")
    results = {"rows": 6, "models": {"tuned": {}, "base": {}}, "settings": {"confidence": 0.95,
               "judge": settings.model_dump(mode="json")},
               "judge": {"base": judge_pair(ROWS, ["wrong"] * 6, [r["reference"] for r in ROWS], settings,
                                            resamples=500)}}
    md = render_markdown("j", results, [])
    assert "| base | 1.000 |" in md and "JUDGE_KEY" in md
    for text in (md, render_html("j", results, []), json.dumps(results)):
        assert KEY not in text
