-- The schema storage.db.init_db created on postgresql before migrations existed (version 2.0.0):
-- SQLModel.metadata.create_all over storage/tables.py, statement by statement.

CREATE TABLE users (
	id SERIAL NOT NULL, 
	username VARCHAR(50) NOT NULL, 
	email VARCHAR(255), 
	hashed_password VARCHAR NOT NULL, 
	is_active BOOLEAN NOT NULL, 
	is_admin BOOLEAN NOT NULL, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	token_version INTEGER NOT NULL, 
	daily_limit INTEGER, 
	monthly_limit INTEGER, 
	PRIMARY KEY (id)
);

CREATE UNIQUE INDEX ix_users_username ON users (username);

CREATE TABLE task_records (
	id SERIAL NOT NULL, 
	task_id VARCHAR(36) NOT NULL, 
	user_id INTEGER, 
	task_type VARCHAR(20) NOT NULL, 
	prompt VARCHAR NOT NULL, 
	negative_prompt VARCHAR, 
	parameters JSON NOT NULL, 
	status VARCHAR(10) NOT NULL, 
	result_path VARCHAR, 
	result_filename VARCHAR, 
	error_message VARCHAR, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	started_at TIMESTAMP WITHOUT TIME ZONE, 
	completed_at TIMESTAMP WITHOUT TIME ZONE, 
	execution_time FLOAT, 
	image_count INTEGER NOT NULL, 
	seed BIGINT, 
	attempts INTEGER NOT NULL, 
	input_keys JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE SET NULL
);

CREATE INDEX ix_task_records_type_created ON task_records (task_type, created_at);

CREATE INDEX ix_task_records_user_created ON task_records (user_id, created_at);

CREATE INDEX ix_task_records_status_created ON task_records (status, created_at);

CREATE UNIQUE INDEX ix_task_records_task_id ON task_records (task_id);

