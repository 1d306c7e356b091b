"""Address arithmetic of the IPAM: CIDRs, gateways, allocation pools, the next free address and
IPv6 EUI-64 addresses. Pure functions; the database side (row lock, unique constraint) is in
services.py."""

import ipaddress
from collections.abc import Iterable, Iterator

from apps.networks.errors import bad_request, conflict, invalid_input

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(value, *, what: str = "IP address") -> IPAddress:
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise invalid_input(f"'{value}' is not a valid {what}.") from None


def canonical(value) -> str:
    """The one spelling of an address that the unique constraint compares."""
    return str(parse_address(value))


def parse_cidr(value, *, ip_version: int | None = None, strict: bool = True) -> IPNetwork:
    try:
        network = ipaddress.ip_network(str(value).strip(), strict=strict)
    except ValueError:
        try:
            loose = ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            raise invalid_input(f"'{value}' is not a valid IP subnet.") from None
        raise invalid_input(f"'{value}' isn't a recommended CIDR, '{loose}' is recommended.") from None
    if ip_version is not None and network.version != ip_version:
        raise invalid_input(f"Cidr {value} does not match ip_version {ip_version}.")
    return network


def host_bounds(network: IPNetwork) -> tuple[int, int]:
    """The first and last usable address (as ints): IPv4 leaves out the network and broadcast
    addresses (except for /31 and /32), IPv6 the subnet-router anycast address."""
    first, last = int(network.network_address), int(network.broadcast_address)
    if network.version == 4:
        if network.prefixlen >= 31:
            return first, last
        return first + 1, last - 1
    if network.prefixlen == 128:
        return first, last
    return first + 1, last


def default_gateway(network: IPNetwork) -> str | None:
    first, last = host_bounds(network)
    if first > last or (network.version == 4 and network.prefixlen >= 31):
        return None
    return str(ipaddress.ip_address(first) if network.version == 4 else ipaddress.IPv6Address(first))


def _address(version: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def default_pools(network: IPNetwork, gateway_ip: str | None) -> list[dict[str, str]]:
    """Every usable address but the gateway, as Neutron's default pools."""
    first, last = host_bounds(network)
    if first > last:
        return []
    ranges = [(first, last)]
    if gateway_ip is not None:
        gateway = int(ipaddress.ip_address(gateway_ip))
        if first <= gateway <= last:
            ranges = [(a, b) for a, b in ((first, gateway - 1), (gateway + 1, last)) if a <= b]
    return [{"start": _address(network.version, a), "end": _address(network.version, b)} for a, b in ranges]


def pool_ranges(pools: Iterable[dict]) -> list[tuple[int, int]]:
    return [(int(ipaddress.ip_address(p["start"])), int(ipaddress.ip_address(p["end"]))) for p in pools]


def clean_pools(network: IPNetwork, pools, gateway_ip: str | None) -> list[dict[str, str]]:
    """Validate requested allocation pools: inside the subnet, start <= end, no overlap, and not
    holding the gateway (409 GatewayConflictWithAllocationPools, as Neutron)."""
    if not isinstance(pools, list):
        raise invalid_input("allocation_pools must be a list of {start, end}.")
    cleaned, ranges = [], []
    first, last = host_bounds(network)
    for pool in pools:
        if not isinstance(pool, dict) or set(pool) != {"start", "end"}:
            raise invalid_input("Each allocation pool needs exactly 'start' and 'end'.")
        start, end = parse_address(pool["start"]), parse_address(pool["end"])
        if start.version != network.version or end.version != network.version:
            raise bad_request(f"The allocation pool {pool['start']}-{pool['end']} is not of IPv{network.version}.",
                              "InvalidAllocationPool")
        if not (first <= int(start) <= int(end) <= last):
            raise bad_request(f"The allocation pool {start}-{end} spans beyond the subnet cidr {network}.",
                              "OutOfBoundsAllocationPool")
        for a, b in ranges:
            if int(start) <= b and a <= int(end):
                raise bad_request(f"Found overlapping allocation pools: {start}-{end} and "
                                  f"{_address(network.version, a)}-{_address(network.version, b)}.",
                                  "OverlappingAllocationPools")
        ranges.append((int(start), int(end)))
        cleaned.append({"start": str(start), "end": str(end)})
    if gateway_ip is not None:
        gateway = int(ipaddress.ip_address(gateway_ip))
        for a, b in ranges:
            if a <= gateway <= b:
                raise conflict("GatewayConflictWithAllocationPools",
                               f"Gateway ip {gateway_ip} conflicts with allocation pool "
                               f"{_address(network.version, a)}-{_address(network.version, b)}.")
    return cleaned


def pool_size(pools: Iterable[dict]) -> int:
    return sum(b - a + 1 for a, b in pool_ranges(pools))


def free_addresses(version: int, pools: Iterable[dict], used: set[int]) -> Iterator[str]:
    """The pools' addresses not in ``used``, lowest first."""
    for a, b in sorted(pool_ranges(pools)):
        value = a
        while value <= b:
            if value not in used:
                yield _address(version, value)
            value += 1


def eui64(network: IPNetwork, mac_address: str) -> str:
    """The SLAAC address a guest makes from the prefix and its MAC (RFC 4291, appendix A)."""
    octets = [int(part, 16) for part in mac_address.split(":")]
    octets[0] ^= 0x02
    interface_id = bytes(octets[:3] + [0xFF, 0xFE] + octets[3:])
    return str(ipaddress.IPv6Address(int(network.network_address) | int.from_bytes(interface_id, "big")))
