"""Issue 24 on the server: a request names a user's weights profile (from `--profiles DIR`) or brings a per-token
KL budget, and gets what `pad decode --profile` / `--kl-budget` writes for the same prompt."""

from __future__ import annotations

import json

import httpx
import pytest
from test_serve import CATS, client

from pad.decode.config import DecodeConfig
from pad.decode.run import Models
from pad.serve import build_service, running_server

PROFILE = {"principles": [{"name": "harmless", "weight": 1.3}, {"name": "humor", "weight": 0.4}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama, tiny_lora):
    folder = tmp_path_factory.mktemp("profiles")
    (folder / "alice.json").write_text(json.dumps(PROFILE))
    (folder / "broken.json").write_text("{not json")
    cfg = DecodeConfig(llm=str(tiny_llama), rm=str(tiny_lora), max_new_tokens=16)
    models = Models(cfg, need_rm=True)
    svc = build_service(cfg, max_batch=4, max_queue=8, max_tokens=64, name="tiny", models=models, profiles=folder)
    with running_server(svc) as url:
        yield url, folder, cfg


def _cli_decode(tmp_path, cfg, *args) -> str:
    """The response `pad decode --prompt CATS ...` writes, through the real command line."""
    from typer.testing import CliRunner

    from pad.cli import app

    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}.jsonl"
    r = CliRunner().invoke(app, ["decode", "--llm", cfg.llm, "--rm", cfg.rm, "--prompt", CATS, "--max-new-tokens", "16",
                                 "--out", str(out), "-q", *args])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())["response"]


def _chat(url, **extra):
    return client(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": CATS}],
                                               max_tokens=16, temperature=0, extra_body=extra)


def test_a_request_naming_a_profile_equals_pad_decode_with_it(served, tmp_path):
    url, folder, cfg = served
    got = _chat(url, profile="alice")
    assert got.model_extra["pad"]["principles"] == PROFILE["principles"]
    want = _cli_decode(tmp_path, cfg, "--profile", str(folder / "alice.json"))
    assert got.choices[0].message.content == want
    assert want != _cli_decode(tmp_path, cfg, "-p", "harmless=1")  # the profile's weights matter


def test_a_request_with_a_kl_budget_equals_pad_decode_with_it(served, tmp_path):
    url, folder, cfg = served
    got = _chat(url, profile="alice", kl_budget=0.05).choices[0].message.content
    assert got == _cli_decode(tmp_path, cfg, "--profile", str(folder / "alice.json"), "--kl-budget", "0.05")
    assert got != _chat(url, profile="alice").choices[0].message.content  # the budget binds here
    vanilla = _chat(url, principles=["harmless=0", "humor=0"])  # w = 0: the base reading the same principle prompt
    assert _chat(url, profile="alice", kl_budget=0).choices[0].message.content == vanilla.choices[0].message.content


@pytest.mark.parametrize(("extra", "status", "says"), [
    ({"profile": "alice", "principles": ["humor=1"]}, 400, "send one of profile and principles"),
    ({"profile": "bob"}, 404, "no profile 'bob'"),
    ({"profile": "../alice"}, 400, "profile must be a name"),
    ({"profile": "/etc/passwd"}, 400, "profile must be a name"),
    ({"profile": "broken"}, 400, "profile 'broken'"),
    ({"kl_budget": -1}, 400, "kl_budget must be a number >= 0"),
    ({"kl_budget": "big"}, 400, "kl_budget"),
])
def test_bad_profiles_and_budgets_are_refused_and_the_server_goes_on(served, extra, status, says):
    url, _, _ = served
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    r = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert says in err["message"] and err["param"] == next(iter(k for k in extra if k != "principles"))
    assert _chat(url).choices[0].finish_reason in ("stop", "length")


def test_a_server_without_profiles_says_so(tiny_llama, tiny_lora):
    cfg = DecodeConfig(llm=str(tiny_llama), rm=str(tiny_lora), max_new_tokens=4)
    svc = build_service(cfg, max_batch=2, max_queue=2, max_tokens=8, name="tiny", models=Models(cfg, need_rm=True))
    with running_server(svc) as url:
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "profile": "alice",
                                                           "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "start it with --profiles DIR" in r.json()["error"]["message"]
