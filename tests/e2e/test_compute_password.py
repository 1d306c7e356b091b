"""changePassword on a real TCG guest whose image asks for the QEMU guest agent
(hw_qemu_guest_agent=yes): libvirt gives the domain the agent's virtio channel, the test VM runs
qemu-ga on it, and `openstack server set --password` changes root's hash in the guest's
/etc/shadow."""

import secrets

import libvirt

from agents.names import domain_name
from tests.e2e.test_openstack_cli import openstack
from tests.e2e.test_volumes import SLOW, boot

AGENT_UP = "CLOUDMGR_TESTVM_GUEST_AGENT=up"


def test_change_password_through_the_guest_agent(live_cloud, testvm_image):
    cloud, token = live_cloud, live_cloud.token()
    name = f"agent-vm-{secrets.token_hex(2)}"
    image = openstack(cloud, "image", "create", "--file", str(testvm_image), "--disk-format", "qcow2",
                      "--container-format", "bare", "--property", "hw_qemu_guest_agent=yes", name, "-f", "json")
    guest = boot(cloud, token, name, imageRef=image["id"])
    try:
        guest.wait_status("ACTIVE", SLOW)
        guest.wait_console(lambda out: AGENT_UP in out and "testvm#" in out[out.rfind(AGENT_UP):],
                           "the guest agent and the shell prompt", SLOW)
        conn = libvirt.open("qemu:///system")
        try:
            xml = conn.lookupByName(domain_name(guest.id)).XMLDesc(0)
        finally:
            conn.close()
        assert "org.qemu.guest_agent.0" in xml and "state='connected'" in xml

        password = f"Pw-{secrets.token_hex(4)}:x y"  # a colon and a space travel too
        openstack(cloud, "server", "set", "--password", password, guest.id)
        hashed = guest.run("cut -d: -f2 /etc/shadow")
        assert hashed.startswith("$6$"), hashed
        salt = hashed.split("$")[2]
        assert guest.run(f"mkpasswd -m sha512 -S {salt} '{password}'") == hashed
        events = openstack(cloud, "server", "event", "list", guest.id, "-f", "json")
        assert "changePassword" in {e["Action"] for e in events}
    finally:
        guest.delete()
        openstack(cloud, "image", "delete", image["id"])
