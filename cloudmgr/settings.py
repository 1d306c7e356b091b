"""cloudmgr settings. Everything comes from the environment, with defaults that need nothing configured.

Every setting read here is documented in the README ("Settings").
"""

import os
import secrets
import socket
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).lower() in ("1", "true", "yes", "on")


DATA_DIR = Path(env("CLOUDMGR_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)
IMAGE_STORE_DIR = DATA_DIR / "images"


def _secret_key() -> str:
    """The secret key from the environment, or generated once into the data dir."""
    if os.environ.get("CLOUDMGR_SECRET_KEY"):
        return os.environ["CLOUDMGR_SECRET_KEY"]
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("CLOUDMGR_DEBUG", False)
ALLOWED_HOSTS = [h for h in env("CLOUDMGR_ALLOWED_HOSTS", "*").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env("CLOUDMGR_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

CLOUDMGR_LISTEN = env("CLOUDMGR_LISTEN", "127.0.0.1:8000")
CLOUDMGR_PUBLIC_URL = env("CLOUDMGR_PUBLIC_URL", f"http://{CLOUDMGR_LISTEN}").rstrip("/")
CLOUDMGR_HOSTNAME = env("CLOUDMGR_HOSTNAME", socket.gethostname())
CLOUDMGR_VIRT_TYPE = env("CLOUDMGR_VIRT_TYPE", "qemu")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "django_htmx",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "apps.tenants",
    "apps.hosts",
    "apps.images",
    "apps.instances",
    "apps.volumes",
    "apps.networks",
    "apps.portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "cloudmgr.api.middleware.RequestIdMiddleware",
    "cloudmgr.api.middleware.DatabaseRefusalMiddleware",
]

ROOT_URLCONF = "cloudmgr.urls"
WSGI_APPLICATION = "cloudmgr.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.portal.context_processors.current_project",
            ],
        },
    },
]

# SQLite in the data dir by default: WAL so readers never block the writer, IMMEDIATE so a
# transaction takes the write lock up front instead of failing with "database is locked" later.
# Connections are kept for 60 s, SQLite's too: opening one (and its pragmas) per request cost
# ~3 ms of CPU (docs/identity.md, "Benchmark").
_default_db = f"sqlite:///{DATA_DIR / 'cloudmgr.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(env("DATABASE_URL", _default_db), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
    # A file, not shared-cache memory, so threaded concurrency tests see real SQLite locking.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "tenants.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "portal:home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "email", "password1*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_ADAPTER = "apps.portal.adapters.NoSignupAccountAdapter"
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/5m/key"}
# Two-factor authentication (allauth.mfa): an authenticator app (TOTP) with recovery codes.
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "cloudmgr"
# Accounts are made by operators, never by sign-up, so an unverified address cannot be squatted.
MFA_ALLOW_UNVERIFIED_EMAIL = True
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["cloudmgr.api.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["cloudmgr.api.permissions.ProjectRolePermission"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["cloudmgr.api.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "cloudmgr.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "cloudmgr API",
    "DESCRIPTION": "OpenStack-compatible API of cloudmgr.",
    "VERSION": "1",
}

# A cache every process of this cloud shares: login rate limits and used TOTP codes must hold
# across web workers. Keys carry the data dir's name, so clouds sharing a Redis never mix.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env("CLOUDMGR_CACHE_URL", env("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")),
        "KEY_PREFIX": f"cloudmgr:{DATA_DIR.name}",
    }
}

CLOUDMGR_TOKEN_TTL = env_int("CLOUDMGR_TOKEN_TTL", 3600)

# Celery: the control plane only. Agents have their own app (agents/worker.py).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
# Results and heartbeats from the agents; one name per cloud that shares a broker.
CLOUDMGR_CONTROL_QUEUE = env("CLOUDMGR_CONTROL_QUEUE", "control")
CELERY_TASK_DEFAULT_QUEUE = CLOUDMGR_CONTROL_QUEUE
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
CELERY_RESULT_EXPIRES = 600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Run agent calls in-process (with the agents' task functions) instead of through the broker.
# For fast unit tests with the fake driver only.
CLOUDMGR_AGENTS_IN_PROCESS = env_bool("CLOUDMGR_AGENTS_IN_PROCESS", False)
CLOUDMGR_AGENT_CALL_TIMEOUT = env_int("CLOUDMGR_AGENT_CALL_TIMEOUT", 15)

CLOUDMGR_HEARTBEAT_INTERVAL = env_int("CLOUDMGR_HEARTBEAT_INTERVAL", 5)
# A host that has not reported for this long is marked down.
CLOUDMGR_HOST_DOWN_AFTER = env_int("CLOUDMGR_HOST_DOWN_AFTER", 30)
CLOUDMGR_CPU_ALLOCATION_RATIO = float(env("CLOUDMGR_CPU_ALLOCATION_RATIO", "4.0"))
CLOUDMGR_RAM_ALLOCATION_RATIO = float(env("CLOUDMGR_RAM_ALLOCATION_RATIO", "1.0"))
CLOUDMGR_DISK_ALLOCATION_RATIO = float(env("CLOUDMGR_DISK_ALLOCATION_RATIO", "1.0"))

CELERY_BEAT_SCHEDULE = {
    "hosts-mark-down": {
        "task": "apps.hosts.tasks.hosts_mark_down",
        "schedule": float(CLOUDMGR_HEARTBEAT_INTERVAL),
    },
    "tokens-purge": {"task": "apps.tenants.tasks.tokens_purge", "schedule": 3600.0},
}

# Compute: a clean shutdown (stop, soft reboot, resize) may take this long before the domain is
# destroyed; the reconciler compares hosts' reported domains with the records this often.
CLOUDMGR_SHUTDOWN_TIMEOUT = env_int("CLOUDMGR_SHUTDOWN_TIMEOUT", 60)
CLOUDMGR_RECONCILE_INTERVAL = env_int("CLOUDMGR_RECONCILE_INTERVAL", 10)
# Scheduler: "spread" (most free RAM first) or "pack"; hosts a failed spawn may try in all.
CLOUDMGR_SCHEDULER_WEIGHER = env("CLOUDMGR_SCHEDULER_WEIGHER", "spread")
CLOUDMGR_SCHEDULER_MAX_ATTEMPTS = env_int("CLOUDMGR_SCHEDULER_MAX_ATTEMPTS", 3)
# noVNC consoles: the proxy's address, the URL clients are given, one-time token lifetime.
CLOUDMGR_CONSOLE_LISTEN = env("CLOUDMGR_CONSOLE_LISTEN", "127.0.0.1:6080")
CLOUDMGR_CONSOLE_URL = env("CLOUDMGR_CONSOLE_URL", f"http://{CLOUDMGR_CONSOLE_LISTEN}").rstrip("/")
CLOUDMGR_CONSOLE_TOKEN_TTL = env_int("CLOUDMGR_CONSOLE_TOKEN_TTL", 60)
CELERY_BEAT_SCHEDULE["instances-reconcile"] = {
    "task": "apps.instances.tasks.instances_reconcile",
    "schedule": float(CLOUDMGR_RECONCILE_INTERVAL),
}

# Default quotas of a new project (OpenStack's defaults).
CLOUDMGR_DEFAULT_QUOTAS = {
    "instances": env_int("CLOUDMGR_QUOTA_INSTANCES", 10),
    "cores": env_int("CLOUDMGR_QUOTA_CORES", 20),
    "ram": env_int("CLOUDMGR_QUOTA_RAM", 51200),
    "volumes": env_int("CLOUDMGR_QUOTA_VOLUMES", 10),
    "gigabytes": env_int("CLOUDMGR_QUOTA_GIGABYTES", 1000),
    "snapshots": env_int("CLOUDMGR_QUOTA_SNAPSHOTS", 10),
    "backups": env_int("CLOUDMGR_QUOTA_BACKUPS", 10),
    "networks": env_int("CLOUDMGR_QUOTA_NETWORKS", 100),
    "ports": env_int("CLOUDMGR_QUOTA_PORTS", 500),
    "floating_ips": env_int("CLOUDMGR_QUOTA_FLOATING_IPS", 50),
    "security_groups": env_int("CLOUDMGR_QUOTA_SECURITY_GROUPS", 10),
}
# Nova's limits that are not counted per project here: key pairs per user, server groups per
# project, servers per group (its defaults; os-quota-sets and limits show them).
CLOUDMGR_COMPUTE_LIMITS = {
    "key_pairs": env_int("CLOUDMGR_LIMIT_KEY_PAIRS", 100),
    "server_groups": env_int("CLOUDMGR_LIMIT_SERVER_GROUPS", 10),
    "server_group_members": env_int("CLOUDMGR_LIMIT_SERVER_GROUP_MEMBERS", 10),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("CLOUDMGR_LOG_LEVEL", "INFO")},
}

# Image service (docs/images.md). Quotas are per project; -1 means unlimited.
CLOUDMGR_IMAGE_QUOTA_COUNT = env_int("CLOUDMGR_IMAGE_QUOTA_COUNT", 100)
CLOUDMGR_IMAGE_QUOTA_BYTES = env_int("CLOUDMGR_IMAGE_QUOTA_BYTES", 1 << 40)
CLOUDMGR_IMAGE_SIZE_CAP = env_int("CLOUDMGR_IMAGE_SIZE_CAP", 1 << 40)
# web-download imports: hosts (`example.com`, `.example.com` for its subdomains, `*`), ports, and
# the private/loopback networks that are nevertheless allowed (none: no SSRF into the cloud).
CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS = [h.strip() for h in env("CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS", "").split(",") if h.strip()]
CLOUDMGR_IMAGE_WEB_DOWNLOAD_PORTS = [p.strip() for p in env("CLOUDMGR_IMAGE_WEB_DOWNLOAD_PORTS", "80,443").split(",") if p.strip()]
CLOUDMGR_IMAGE_WEB_DOWNLOAD_NETWORKS = [n.strip() for n in env("CLOUDMGR_IMAGE_WEB_DOWNLOAD_NETWORKS", "").split(",") if n.strip()]
# How agents fetch images: `http` from the image API with a download ticket valid this long, or
# `file` (one box: the agent reads the image store directly).
CLOUDMGR_IMAGE_AGENT_TRANSFER = env("CLOUDMGR_IMAGE_AGENT_TRANSFER", "http")
CLOUDMGR_IMAGE_AGENT_URL = env("CLOUDMGR_IMAGE_AGENT_URL", CLOUDMGR_PUBLIC_URL).rstrip("/")
CLOUDMGR_IMAGE_TICKET_TTL = env_int("CLOUDMGR_IMAGE_TICKET_TTL", 1800)
CLOUDMGR_IMAGE_CACHE_MAX_AGE = env_int("CLOUDMGR_IMAGE_CACHE_MAX_AGE", 7 * 86400)
CLOUDMGR_IMAGE_QEMU_CHECK = env_bool("CLOUDMGR_IMAGE_QEMU_CHECK", True)
CLOUDMGR_IMAGE_CONVERT_TO = env("CLOUDMGR_IMAGE_CONVERT_TO", "")
CELERY_BEAT_SCHEDULE["image-cache-prune"] = {"task": "apps.images.tasks.image_cache_prune_all", "schedule": 3600.0}
CELERY_BEAT_SCHEDULE["images-reap-uploads"] = {"task": "apps.images.tasks.images_reap_uploads", "schedule": 600.0}

# Networks (docs/networks.md). The bootstrap's external network `public` (flat, on the physical
# network CLOUDMGR_PUBLIC_PHYSNET: the external host bridge, whose host address and range the
# agents read from the same CLOUDMGR_EXTERNAL_CIDR) and the admin project's `private` network (also
# the CIDR of auto-allocated networks); tenant networks are VXLAN with a VNI from the range;
# routers and DHCP servers run on CLOUDMGR_NETWORK_HOST (default: the first host).
CLOUDMGR_EXTERNAL_CIDR = env("CLOUDMGR_EXTERNAL_CIDR", "172.24.4.1/24")
CLOUDMGR_PUBLIC_PHYSNET = env("CLOUDMGR_PUBLIC_PHYSNET", "public")
CLOUDMGR_PRIVATE_NETWORK_CIDR = env("CLOUDMGR_PRIVATE_NETWORK_CIDR", "10.0.0.0/26")
CLOUDMGR_DNS_NAMESERVERS = [a.strip() for a in env("CLOUDMGR_DNS_NAMESERVERS", "").split(",") if a.strip()]
CLOUDMGR_TENANT_NETWORK_TYPE = env("CLOUDMGR_TENANT_NETWORK_TYPE", "vxlan")
CLOUDMGR_VXLAN_VNI_RANGE = env("CLOUDMGR_VXLAN_VNI_RANGE", "1:16000")
CLOUDMGR_NETWORK_HOST = env("CLOUDMGR_NETWORK_HOST", "")
# Give every instance a config drive (Nova's force_config_drive), not only those on a network
# without a metadata service (docs/networks.md).
CLOUDMGR_FORCE_CONFIG_DRIVE = env_bool("CLOUDMGR_FORCE_CONFIG_DRIVE", False)

# Volumes (docs/volumes.md): the storage host (default: the first host), the backend of types
# that name none, the default type, how long a detach waits for the guest to let go of the disk.
CLOUDMGR_STORAGE_HOST = env("CLOUDMGR_STORAGE_HOST", "")
CLOUDMGR_VOLUME_DEFAULT_BACKEND = env("CLOUDMGR_VOLUME_DEFAULT_BACKEND", "file")
CLOUDMGR_VOLUME_DEFAULT_TYPE = env("CLOUDMGR_VOLUME_DEFAULT_TYPE", "__DEFAULT__")
CLOUDMGR_VOLUME_DETACH_TIMEOUT = env_int("CLOUDMGR_VOLUME_DETACH_TIMEOUT", 30)
