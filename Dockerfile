# The hotline bridge (AMI client, FastAGI server, console, Vosk) for docker-compose.
# It runs as the unprivileged user `hotline` (uid 10001), the same user as the Asterisk image: the shared run
# volume holds folders 0700 and files 0600 (recordings, secrets, the rendered configuration), readable by that
# one user only. .dockerignore keeps .env, var/, databases and recordings out of the build context.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng sox && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 hotline \
 && useradd --system --uid 10001 --gid hotline --home-dir /var/hotline --no-create-home --shell /usr/sbin/nologin hotline \
 && install -d -m 0700 -o hotline -g hotline /var/hotline
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e .
ENV HOTLINE_RUN_DIR=/var/hotline
USER hotline:hotline
CMD ["hotline", "run", "--no-asterisk"]
