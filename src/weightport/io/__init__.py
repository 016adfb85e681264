"""Reading and writing checkpoint files: lazy safetensors access, a streaming sharded writer, atomic output folders."""
