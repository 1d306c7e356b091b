"""Host-local networking (bridges, taps, DHCP). Empty for now: the control plane names bridges with
``agents.names.bridge_name`` and libvirt attaches the taps (``agents.names.tap_name``) to them."""
