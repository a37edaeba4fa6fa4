"""What the API says once its port is open: where it answers, what it serves, and how to try
it, or why it cannot separate yet (issue: the first run explains itself)."""

import logging

from stemkube_api.startup import Launch, base_url, local_summary, ready_lines


def test_the_ready_line_names_the_url_the_model_the_weights_the_data_and_the_ttl() -> None:
    summary = local_summary(
        ["htdemucs", "mdx"], "htdemucs", None, "/home/me/.local/share/stemkube", 86400, 1
    )
    assert summary == (
        "local mode, model htdemucs (also mdx), weights from the Demucs hub (cached), "
        "1 job(s) at a time, data in /home/me/.local/share/stemkube, finished jobs kept 24h0m"
    )
    url = base_url("127.0.0.1", 8000)
    assert ready_lines(url, Launch(summary), None) == [
        (logging.INFO, f"stemkube is ready on http://127.0.0.1:8000 ({summary})"),
        (logging.INFO, "try it: curl -F file=@song.mp3 http://127.0.0.1:8000/upload"),
    ]
    mine = local_summary(["mine"], "mine", "./models", "/data", 3600, 2)
    assert "model mine, weights from ./models, 2 job(s) at a time" in mine
    assert "kept 1h0m" in mine


def test_with_keys_required_the_curl_line_sends_one() -> None:
    lines = ready_lines("http://localhost:8000", Launch("local mode", keys_required=True), None)
    assert lines[1][1] == (
        'try it: curl -H "Authorization: Bearer $STEMKUBE_API_KEY" -F file=@song.mp3 '
        "http://localhost:8000/upload"
    )


def test_without_weights_it_says_why_it_cannot_separate() -> None:
    lines = ready_lines("http://localhost:8000", Launch("local mode"), "no weights; --model-repo")
    assert [level for level, _ in lines] == [logging.WARNING, logging.WARNING]
    assert lines[1][1] == "but it cannot separate yet: no weights; --model-repo"


def test_urls_for_every_address_and_ipv6() -> None:
    assert base_url("0.0.0.0", 8000) == "http://localhost:8000"
    assert base_url("::", 80) == "http://localhost:80"
    assert base_url("::1", 8000) == "http://[::1]:8000"
