FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY streams ./streams
COPY models ./models
RUN pip install --no-cache-dir .
ENV API_HOST=0.0.0.0 STATE_DIR=/var/lib/rtml
EXPOSE 8000
CMD ["python", "-m", "engine", "run"]
