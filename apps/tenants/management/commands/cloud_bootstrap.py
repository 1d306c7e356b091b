import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.hosts.services import host_register
from apps.images.models import Image, ImageStatus, Visibility
from apps.images.services import image_import_file
from apps.instances.services import flavor_ensure
from apps.networks.services import network_bootstrap
from apps.tenants.models import Role, User
from apps.tenants.services import project_ensure, role_grant, user_create
from cloudmgr.exceptions import ApplicationError

# (id, name, vcpus, ram MiB, disk GB): devstack's nano/micro and Nova's classic m1 set.
DEFAULT_FLAVORS = [
    ("42", "m1.nano", 1, 128, 1),
    ("84", "m1.micro", 1, 192, 1),
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
]


class Command(BaseCommand):
    help = (
        "Prepare a new cloud, idempotently: the admin project and user (its random password is "
        "printed once, on first run only), default flavors, the test image, this host, the public "
        "network and the admin project's private network and router."
    )

    def add_arguments(self, parser):
        parser.add_argument("--testvm-image", type=Path, help="register this qcow2 file as the public image 'testvm'")
        parser.add_argument("--password-file", type=Path, help="also write the new admin password to this file (0600)")

    def handle(self, *args, testvm_image, password_file, **options):
        try:
            with transaction.atomic():
                self._bootstrap(testvm_image, password_file)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc

    def _bootstrap(self, testvm_image, password_file):
        project = project_ensure(name="admin", description="The cloud operators' project")
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            password = secrets.token_urlsafe(12)
            admin = user_create(username="admin", password=password, is_admin=True)
            self.stdout.write(self.style.SUCCESS(f"Created user 'admin' with password: {password}"))
            self.stdout.write("This password is shown once and stored nowhere in clear text.")
            if password_file:
                password_file.touch(mode=0o600)
                password_file.write_text(password + "\n")
        role_grant(user=admin, project=project, role=Role.ADMIN)
        for flavor_id, name, vcpus, ram, disk in DEFAULT_FLAVORS:
            flavor_ensure(flavor_id=flavor_id, name=name, vcpus=vcpus, ram=ram, disk=disk)
        if testvm_image and not Image.objects.filter(name="testvm", status=ImageStatus.ACTIVE).exists():
            image = image_import_file(
                project=project, path=testvm_image, name="testvm", disk_format="qcow2", visibility=Visibility.PUBLIC
            )
            self.stdout.write(f"Registered image testvm ({image.id}).")
        host = host_register(hostname=settings.CLOUDMGR_HOSTNAME, virt_type=settings.CLOUDMGR_VIRT_TYPE)
        self.stdout.write(f"Host {host.hostname} is registered (queue {host.queue}).")
        # After the host: it is the network host that runs the routers and DHCP servers.
        networks = network_bootstrap(project=project)
        self.stdout.write(f"Networks: public ({networks['public'].id}), private ({networks['private'].id}) "
                          "with router1 to public.")
