# The OptionStream image: the package with its Dagster deployment extra (PostgreSQL storage), the
# workspace, the production configuration and the production Dagster instance. docker-compose.yml runs
# the Dagster webserver and the daemon from it; any `optionstream` command runs in it too
# (`docker compose exec dagster-webserver optionstream query ...`). docs/deploy.md.
#
# No secret is in any layer: the Postgres password, the Deribit API key and the Kafka SASL password
# are read from the environment at run time only (config/dagster-production.yaml, config/production.yaml).
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The user the services run as; a fixed uid, so the volumes' ownership survives a rebuild.
RUN groupadd --system --gid 10001 optionstream \
    && useradd --system --uid 10001 --gid optionstream --create-home --home-dir /home/optionstream optionstream

WORKDIR /opt/optionstream

# The package first, so that a change to the configuration alone does not reinstall it. The install
# is the README's (pip install from the checkout) without -e, with the deploy extra: dagster-postgres.
COPY pyproject.toml README.md ./
COPY optionstream_pipeline ./optionstream_pipeline
# DL3013 (pin versions in pip) is about packages from the index: this installs the checkout itself,
# whose dependencies pyproject.toml pins with ==.
# hadolint ignore=DL3013
RUN pip install '.[deploy]'

COPY workspace.yaml ./
COPY config ./config
# The production instance: PostgreSQL storage from DAGSTER_POSTGRES_* at run time, run monitoring, the
# one-capture-run and archive concurrency limits.
COPY config/dagster-production.yaml /opt/dagster/dagster_home/dagster.yaml

# The volumes' mount points, owned by the service user: a new named volume takes their ownership.
RUN mkdir -p /opt/dagster/dagster_home/storage /data/archive /data/universe \
    && chown optionstream:optionstream /opt/dagster/dagster_home /opt/dagster/dagster_home/storage \
        /data/archive /data/universe

ENV DAGSTER_HOME=/opt/dagster/dagster_home \
    OPTIONSTREAM_CONFIG=/opt/optionstream/config/production.yaml \
    OPTIONSTREAM_DEPLOYMENT=production

USER 10001:10001
EXPOSE 3000
CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"]
