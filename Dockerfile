# The hotline bridge (AMI client, FastAGI server, console, Vosk) for docker-compose.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng sox && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e .
ENV HOTLINE_RUN_DIR=/var/hotline
CMD ["hotline", "run", "--no-asterisk"]
