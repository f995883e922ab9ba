FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY streams ./streams
COPY models ./models
# The Open Inference Protocol's gRPC messages are generated from the .proto, then installed with the package.
RUN pip install --no-cache-dir grpcio-tools==1.81.1 protobuf==6.33.6 \
    && python -m grpc_tools.protoc -I. --python_out=. engine/oip/grpc_predict_v2.proto \
    && pip install --no-cache-dir .
ENV API_HOST=0.0.0.0 STATE_DIR=/var/lib/rtml
EXPOSE 8000 8001
CMD ["python", "-m", "engine", "run"]
