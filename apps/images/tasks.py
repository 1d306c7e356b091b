"""Control-plane tasks of the image service (on the control queue): import tasks, the reaper of
dead uploads, and the periodic prune of the hosts' image caches."""

from celery import shared_task
from django.conf import settings

from apps.images import services


@shared_task(name="apps.images.tasks.image_import", ignore_result=True)
def image_import(image_id: str, method: str, uri: str | None = None) -> None:
    services.image_import_run(image_id=image_id, method=method, uri=uri)


def image_import_start(*, image_id: str, method: str, uri: str | None) -> None:
    """Run an import task: on the control worker, or right here in the fast unit tests."""
    kwargs = {"image_id": image_id, "method": method, "uri": uri}
    if settings.CLOUDMGR_AGENTS_IN_PROCESS:
        image_import.apply(kwargs=kwargs)
    else:
        image_import.apply_async(kwargs=kwargs, queue=settings.CLOUDMGR_CONTROL_QUEUE)


@shared_task(name="apps.images.tasks.images_reap_uploads", ignore_result=True)
def images_reap_uploads() -> None:
    services.images_reap_uploads()


@shared_task(name="apps.images.tasks.image_cache_prune_all", ignore_result=True)
def image_cache_prune_all() -> None:
    services.image_cache_prune(max_age=settings.CLOUDMGR_IMAGE_CACHE_MAX_AGE, wait=False)
