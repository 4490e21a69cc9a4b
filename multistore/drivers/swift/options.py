"""The swift store's options (glance_store's, plus a few of multistore's own)."""

from __future__ import annotations

from oslo_config import cfg

#: glance_store's "MB" (units.k * units.Ki): sizes in options count in it.
ONE_MB = 1000 * 1024

OPTIONS = [
    cfg.BoolOpt("swift_store_auth_insecure", default=False,
                help="Do not check the TLS certificate of the auth and Swift servers."),
    cfg.StrOpt("swift_store_cacert", help="CA bundle to check TLS certificates with."),
    cfg.StrOpt("swift_store_region", help="Region of the Swift endpoint in the catalog."),
    cfg.StrOpt("swift_store_endpoint",
               help="Swift storage URL to use instead of the catalog's "
                    "(``https://swift:8080/v1/AUTH_xyz``); in multi-tenant mode "
                    "``%(tenant_id)s`` stands for the user's project id."),
    cfg.StrOpt("swift_store_endpoint_type", default="publicURL",
               choices=("publicURL", "adminURL", "internalURL"),
               help="Catalog endpoint type of the Swift endpoint."),
    cfg.StrOpt("swift_store_service_type", default="object-store",
               help="Catalog service type of Swift."),
    cfg.StrOpt("swift_store_container", default="glance",
               help="Container images go to; the prefix of the containers "
                    "in multi-container and multi-tenant modes."),
    cfg.IntOpt("swift_store_large_object_size", default=5 * 1024, min=1,
               help="Images of this many MB (1,024,000 bytes) or more, or of "
                    "unknown size, are stored as segments plus a manifest."),
    cfg.IntOpt("swift_store_large_object_chunk_size", default=200, min=1,
               help="Segment size, in MB of 1,024,000 bytes."),
    cfg.BoolOpt("swift_store_create_container_on_put", default=False,
                help="Create the container when it does not exist."),
    cfg.BoolOpt("swift_store_multi_tenant", default=False,
                help="Store images in the account of the user adding them, "
                     "one container per image, with the user's token."),
    cfg.IntOpt("swift_store_multiple_containers_seed", default=0, min=0, max=32,
               help="Spread images over 16^N containers named "
                    "``<container>_<first N characters of the image id>``."),
    cfg.ListOpt("swift_store_admin_tenants", default=[],
                help="Projects given write access to every multi-tenant image."),
    cfg.BoolOpt("swift_store_ssl_compression", default=True,
                help="Allow TLS compression (kept for compatibility)."),
    cfg.IntOpt("swift_store_retry_get_count", default=0, min=0,
               help="How many times a broken download resumes where it "
                    "stopped before the read fails."),
    cfg.IntOpt("swift_store_expire_soon_interval", default=60, min=0,
               help="Seconds before a token's expiry at which it is renewed "
                    "(Keystone references)."),
    cfg.BoolOpt("swift_store_use_trusts", default=True,
                help="Kept for compatibility; multistore uses the caller's "
                     "token in multi-tenant mode and creates no trusts."),
    cfg.BoolOpt("swift_buffer_on_upload", default=False,
                help="Kept for compatibility: segments are always held in "
                     "memory so that a failed PUT can be retried."),
    cfg.StrOpt("swift_upload_buffer_dir",
               help="Kept for compatibility (see swift_buffer_on_upload)."),
    cfg.StrOpt("default_swift_reference", default="ref1",
               help="Section of swift_store_config_file holding the account "
                    "new images go to."),
    cfg.StrOpt("swift_store_auth_version", default="3", choices=("1", "2", "3"),
               deprecated_for_removal=True,
               help="Auth version of swift_store_auth_address (1: Swift's "
                    "tempauth/swauth, 2: Keystone v2, 3: Keystone v3)."),
    cfg.StrOpt("swift_store_auth_address", deprecated_for_removal=True,
               help="Auth URL, when no swift_store_config_file is used."),
    cfg.StrOpt("swift_store_user", secret=True, deprecated_for_removal=True,
               help="``project:user``, when no swift_store_config_file is used."),
    cfg.StrOpt("swift_store_key", secret=True, deprecated_for_removal=True,
               help="The user's key, when no swift_store_config_file is used."),
    cfg.StrOpt("swift_store_application_credential_id", secret=True,
               help="Keystone application credential id (instead of user/key)."),
    cfg.StrOpt("swift_store_application_credential_secret", secret=True,
               help="Keystone application credential secret."),
    cfg.StrOpt("swift_store_project_name", deprecated_for_removal=True,
               help="Project name, when no swift_store_config_file is used."),
    cfg.StrOpt("swift_store_project_id", deprecated_for_removal=True,
               help="Project id, when no swift_store_config_file is used."),
    cfg.StrOpt("swift_store_config_file",
               help="File of account references (``[ref1]`` sections with "
                    "auth_address, user, key, auth_version ...); enables "
                    "credential-free ``swift+config://`` locations."),
    # multistore's own
    cfg.IntOpt("swift_store_segment_concurrency", default=1, min=1, max=32,
               help="Segments of one image in flight besides the one being "
                    "fed. 1 streams each segment from the caller's data (a few "
                    "chunks of memory); more lets each segment buffer up to its "
                    "size so that several go up in parallel (memory per upload "
                    "up to about (this + 1) x the segment size), which pays off "
                    "only when one stream does not keep the Swift cluster busy."),
    cfg.IntOpt("swift_store_timeout", default=60, min=1,
               help="Seconds to wait for the Swift or auth server to answer."),
    cfg.IntOpt("swift_store_retries", default=2, min=0,
               help="Retries of a failed request (connection errors, 5xx) "
                    "with a short backoff; uploads, whose bodies are streamed, "
                    "are not retried."),
    cfg.StrOpt("swift_store_acl_style", default="keystone",
               choices=("keystone", "tempauth"),
               help="How set_acls writes container ACLs: ``keystone`` "
                    "(``*:*``, ``<project>:*``, Swift's keystoneauth) or "
                    "``tempauth`` (``.r:*``, ``<account>``)."),
]


__all__ = ["OPTIONS", "ONE_MB"]
