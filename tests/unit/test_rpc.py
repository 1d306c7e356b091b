"""How the control plane sends agent tasks (cloudmgr.rpc)."""

from cloudmgr import rpc


def test_a_cast_asks_for_no_result(settings, monkeypatch):
    """The answer of a cast comes through its callback. Sent without ignore_result, each task
    would subscribe the sending process to its result channel on the Redis result backend, and
    no result ever comes: one more subscription per boot, port change, ..., for the life of the
    web server."""
    settings.CLOUDMGR_AGENTS_IN_PROCESS = False
    sent = []
    monkeypatch.setattr(rpc.control_app, "send_task", lambda name, **options: sent.append((name, options)))
    rpc.agent_cast(queue="host.node1", task="agents.compute.spawn", payload={"instance_id": "x"},
                   callback="apps.instances.tasks.spawn_done")
    [(name, options)] = sent
    assert name == "agents.compute.spawn" and options["queue"] == "host.node1"
    assert options["ignore_result"] is True
    assert options["link"]["task"] == "apps.instances.tasks.spawn_done"
    assert options["link"]["options"]["queue"] == settings.CLOUDMGR_CONTROL_QUEUE
