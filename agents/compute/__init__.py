"""Compute: libvirt domains for instances (driver interface, libvirt and fake drivers, domain XML)."""
