from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.images.services import image_cache_prune
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = (
        "Remove cached base images from the compute hosts' image caches when no instance on the "
        "host is based on them and they were not used for --max-age seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--max-age", type=int, default=settings.CLOUDMGR_IMAGE_CACHE_MAX_AGE,
                            help="seconds since last use (default: CLOUDMGR_IMAGE_CACHE_MAX_AGE)")
        parser.add_argument("--host", help="only this host (default: every host that is up)")

    def handle(self, *args, max_age, host, **options):
        if max_age < 0:
            raise CommandError("--max-age must be 0 or more.")
        try:
            answers = image_cache_prune(max_age=max_age, hostname=host, wait=True)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if not answers:
            self.stdout.write("No host is up.")
        failed = False
        for hostname, answer in sorted(answers.items()):
            if not answer.get("ok"):
                failed = True
                self.stderr.write(f"{hostname}: {answer.get('error')}")
                continue
            removed = answer.get("removed") or []
            self.stdout.write(
                f"{hostname}: removed {len(removed)} image(s), {answer.get('freed_bytes', 0)} bytes freed, "
                f"{answer.get('kept', 0)} kept" + (f": {', '.join(removed)}" if removed else "")
            )
        if failed:
            raise CommandError("Pruning failed on some hosts.")
