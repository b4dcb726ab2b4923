# The gateway image (also runs `commercecore jobs run` and the DBA commands). See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# dependencies first, so that a code change does not reinstall them
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY commercecore ./commercecore
RUN pip install .

# the plan and its scripts: `commercecore db status|deploy|restore` read them from the working directory
COPY sqitch.plan sqitch.conf ./
COPY roles ./roles
COPY schema ./schema
COPY procedures ./procedures
COPY views ./views
COPY revert ./revert
COPY verify ./verify

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin commercecore
USER commercecore

EXPOSE 8000
CMD ["commercecore", "serve", "--host", "0.0.0.0", "--port", "8000"]
