from fssgui.cli import main


def test_self_test_passes_and_reports_versions(capsys):
    assert main(["self-test"]) == 0
    out = capsys.readouterr().out
    for needle in ("torch:", "cuDNN:", "PySide6 / Qt:", "[ ok ] forward on cpu", "[ ok ] offscreen render", "self-test passed"):
        assert needle in out


def test_self_test_fails_loudly(capsys):
    assert main(["self-test", "--model", "no-such-model"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] forward on cpu: ModelError: unknown model 'no-such-model'" in out
    assert "self-test FAILED" in out
