FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv

COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
RUN pip install .

COPY alembic.ini ./
COPY migrations ./migrations

RUN useradd --create-home --uid 1000 agents && mkdir -p /srv/.data/workspaces \
    && chown -R agents /srv/.data
USER agents

ENV AGENTS_DATA_DIR=/srv/.data AGENTS_WORKSPACE_BASE=/srv/.data/workspaces
EXPOSE 8000
CMD ["agents", "serve", "--host", "0.0.0.0", "--port", "8000"]
