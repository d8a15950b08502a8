"""The local stack's command line, without services (test_cluster.py starts them)."""

import json

from services import stack


def test_down_and_status_with_no_stack_recorded(tmp_path, capsys):
    assert stack.main(["down", "--state", str(tmp_path)]) == 0
    assert "nothing to stop" in capsys.readouterr().out
    assert stack.main(["status", "--state", str(tmp_path)]) == 1


def test_up_refuses_while_a_stack_is_recorded(tmp_path, capsys):
    record = {"processes": {}, "folders": [], "ports": {}, "ray_workers": 1, "ray_cpus": 2}
    (tmp_path / stack.STATE_FILE).write_text(json.dumps(record))
    assert stack.main(["up", "--state", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a stack is recorded") and "services.stack down" in err
    assert err.count("\n") == 1


def test_free_ports_are_free(tmp_path):
    import socket

    port = stack.free_port()
    with socket.socket() as probe:
        probe.bind((stack.HOST, port))
