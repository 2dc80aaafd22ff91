"""The control plane's use-cases, read top to bottom.

    create_project ─► create_environment ─► set_variables            (projects, environments)
    create_deployment (upload or push) ─► BuildQueue ─► run_build:    (lifecycle)
        builder(job) ─► runtime.boot_check(release) ─► runtime.register(release)
        ─► finish_successful (compare-and-set of the current pointer) | finish_failed
    promote (explicit, any successful deployment = rollback)          (promotion)
    reconcile_after_restart (nothing stays `building`)                (restart)
    publish (a new RoutingSnapshot), publish_soon (coalesced, later)  (routing)
    add_domain / remove_domain / renew_domain, publish_certificates   (domains)

Every function that touches the database is sync and runs its writes in one transaction; async
callers use threads. The builder and the runtime plug in through the `Builder` and
`RuntimeControl` protocols (`plane`; phemeral.build.pipeline.build and
phemeral.runtime.supervisor.Runtime satisfy them).
"""

from phemeral.deploys.domains import (
    add_domain,
    get_domain,
    list_domains,
    publish_certificates,
    remove_domain,
    renew_domain,
    set_https,
)
from phemeral.deploys.environments import (
    create_environment,
    delete_environment,
    set_variables,
    unset_variables,
    update_environment,
)
from phemeral.deploys.lifecycle import (
    MIN_FREE_BYTES,
    Trigger,
    create_deployment,
    deploy,
    enough_disk,
    finish_failed,
    finish_successful,
    prepare_job,
    resolved_start_command,
    run_build,
)
from phemeral.deploys.plane import (
    Builder,
    ControlPlane,
    RuntimeControl,
    SnapshotListener,
    TlsListener,
    now,
)
from phemeral.deploys.projects import create_project, delete_project, update_project, webhook_secret
from phemeral.deploys.promotion import promote, should_promote
from phemeral.deploys.queue import BuildQueue
from phemeral.deploys.restart import INTERRUPTED, reconcile_after_restart, releases
from phemeral.deploys.retention import collect_releases, set_pinned, to_collect
from phemeral.deploys.routing import Publisher, instances, publish, publish_soon, routing_snapshot

__all__ = [
    "INTERRUPTED",
    "MIN_FREE_BYTES",
    "BuildQueue",
    "Builder",
    "ControlPlane",
    "Publisher",
    "RuntimeControl",
    "SnapshotListener",
    "TlsListener",
    "Trigger",
    "add_domain",
    "collect_releases",
    "create_deployment",
    "create_environment",
    "create_project",
    "delete_environment",
    "delete_project",
    "deploy",
    "enough_disk",
    "finish_failed",
    "finish_successful",
    "get_domain",
    "instances",
    "list_domains",
    "now",
    "prepare_job",
    "promote",
    "publish",
    "publish_certificates",
    "publish_soon",
    "reconcile_after_restart",
    "releases",
    "remove_domain",
    "renew_domain",
    "resolved_start_command",
    "routing_snapshot",
    "run_build",
    "set_https",
    "set_pinned",
    "set_variables",
    "should_promote",
    "to_collect",
    "unset_variables",
    "update_environment",
    "update_project",
    "webhook_secret",
]
