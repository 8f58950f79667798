# One image for every OpenSQT component; docker-compose picks the component per service.
FROM python:3.11-slim
WORKDIR /app
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
COPY configs configs
RUN pip install --no-cache-dir .
ENTRYPOINT ["sqt"]
