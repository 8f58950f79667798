# One image for every OpenSQT component; the command picks the component:
#   docker run --rm IMAGE run sim          (docker-compose.yml: one service per component)
#   docker run --rm IMAGE status           (any `sqt` command)
# No secret is in the image: NATS passwords, venue keys and alert webhooks come from the
# environment at run time (docker-compose.yml says which service gets which).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Every package of pyproject.toml's [tool.setuptools] packages (tests/test_deploy.py checks it:
# setuptools' `find` skips a missing one silently, and the image would fail only when run).
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY bus bus
COPY venues venues
COPY publishers publishers
COPY strategies strategies
COPY executors executors
COPY monitors monitors
COPY gateway gateway
COPY web web
COPY cli cli
COPY testkit testkit
COPY backtest backtest
COPY orchestration orchestration
COPY configs configs

# The install, and a user of its own: uid/gid 10001, owning only /app/data (the default
# data_dir, where the archive writes; a named volume mounted there inherits the ownership).
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 sqt \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin sqt \
    && mkdir -p /app/data/archive \
    && chown -R 10001:10001 /app/data

USER 10001:10001

ENTRYPOINT ["sqt"]
CMD ["--help"]
