import sys

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the noVNC console proxy (websockify) that consumes one-time console tokens."

    def add_arguments(self, parser):
        parser.add_argument("--listen", default=settings.CLOUDMGR_CONSOLE_LISTEN,
                            help="address:port to listen on (default CLOUDMGR_CONSOLE_LISTEN)")
        parser.add_argument("--web", default=str(settings.BASE_DIR / "static" / "vendor" / "novnc"),
                            help="directory of noVNC's files to serve (default: the vendored noVNC)")

    def handle(self, *args, listen, web, **options):
        from websockify.websocketproxy import websockify_init

        argv = ["websockify", "--token-plugin", "apps.instances.consoles.ConsoleTokenPlugin", "--token-source", ""]
        if web:
            argv += ["--web", web]
        sys.argv = argv + [listen]
        websockify_init()
