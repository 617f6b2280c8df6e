"""``trimode serve`` before it serves: a taken port is refused before the model loads, and the
start-up line says what is served, how and where."""

from __future__ import annotations

import socket

from conftest import tiny_text_checkpoint  # pytest puts tests/ on sys.path

from trimode.cli import build_parser, main


def test_a_taken_port_is_refused_before_the_model_loads(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The model path does not exist: the port error coming first shows nothing was loaded.
        code = main(["serve", "--model", str(tmp_path / "missing"), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot serve on 127.0.0.1:{port}" in err and "does not exist" not in err
    assert "Traceback" not in err


def test_a_bad_port_is_one_line(capsys, tmp_path):
    assert main(["serve", "--model", str(tmp_path / "missing"), "--port", "70000"]) == 2
    assert "--port must be in 1..65535, got 70000" in capsys.readouterr().err


def test_the_start_up_line_names_model_mode_device_address_and_limits(tmp_path):
    from trimode.server.cli import build

    folder = tiny_text_checkpoint(tmp_path)
    args = build_parser().parse_args(["serve", "--model", str(folder), "--mode", "linear-spec", "--port", "8123",
                                      "--max-batch", "5", "--max-cached-tokens", "4096"])
    app, engine = build(args)
    try:
        line = app.state.banner
    finally:
        engine.close()
    for part in ("model 'model'", "default mode linear-spec", "cpu float32", "http://127.0.0.1:8123/v1",
                 "max batch 5", "max cached tokens 4096"):
        assert part in line, (part, line)


def test_security_and_limit_options_reach_the_app(tmp_path, monkeypatch):
    from trimode.server.cli import build

    folder = tiny_text_checkpoint(tmp_path)
    monkeypatch.setenv("TRIMODE_API_KEY", "from-env")
    args = build_parser().parse_args(["serve", "--model", str(folder), "--max-step-tokens", "512",
                                      "--max-body-bytes", "1000"])
    app, engine = build(args)
    try:
        guard = app.user_middleware[0]
        assert guard.kwargs == {"allowed_hosts": ("localhost", "127.0.0.1", "::1"), "api_key": "from-env",
                                "max_body_bytes": 1000}
        assert engine.max_step_tokens == 512 and "API key required" in app.state.banner
    finally:
        engine.close()
    args = build_parser().parse_args(["serve", "--model", str(folder), "--host", "0.0.0.0", "--allowed-hosts", "*"])
    app, engine = build(args)
    engine.close()
    assert app.user_middleware[0].kwargs["allowed_hosts"] is None


def test_bad_limits_are_one_line(capsys, tmp_path):
    for flags, message in [(["--max-step-tokens", "0"], "--max-step-tokens must be > 0, got 0"),
                           (["--body-timeout", "-1"], "--body-timeout must be > 0"),
                           (["--allowed-hosts", " , "], "--allowed-hosts must name at least one host")]:
        assert main(["serve", "--model", str(tmp_path / "missing"), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
