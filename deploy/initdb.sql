-- Run once by the postgres image on an empty volume: one database per store.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE requests;
