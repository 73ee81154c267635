# The pdx worker image used by compose.yaml.
FROM python:3.11-slim
WORKDIR /app
# What `pip install .` builds from: the package and schemas/ (the Avro contract, installed as the package
# data streams.contracts.schemas; see pyproject.toml). tests/integration/test_install.py repeats these steps
# (the same COPY sources, a regular install, pdx run from outside the source tree).
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY schemas ./schemas
RUN pip install --no-cache-dir . && cd / && pdx --help > /dev/null
# Not part of the package: the shipped policies and demo inventory, used from /app by compose.yaml
# (`pdx policy publish policies/`) and found as ./policies by commands that default to them.
COPY policies ./policies
COPY examples ./examples
ENV PYTHONUNBUFFERED=1
CMD ["pdx", "worker"]
