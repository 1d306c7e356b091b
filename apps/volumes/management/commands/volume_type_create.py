from django.core.management.base import BaseCommand, CommandError

from apps.volumes import services
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Create a volume type (the operator's): --backend file|lvm, --multiattach, --private."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--backend", choices=services.BACKENDS, help="volume_backend_name")
        parser.add_argument("--multiattach", action="store_true", help="volumes may be attached to several servers")
        parser.add_argument("--private", action="store_true")
        parser.add_argument("--description", default="")

    def handle(self, *args, **options):
        specs = {}
        if options["backend"]:
            specs["volume_backend_name"] = options["backend"]
        if options["multiattach"]:
            specs["multiattach"] = "<is> True"
        try:
            vtype = services.volume_type_create(name=options["name"], description=options["description"],
                                                is_public=not options["private"], extra_specs=specs)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"volume type {vtype.name} {vtype.id} {vtype.extra_specs}")
