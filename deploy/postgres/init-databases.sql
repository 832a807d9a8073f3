-- One database per service, owned by the groundswell user (POSTGRES_USER). Runs once, on first start.
CREATE DATABASE groundswell_membership OWNER groundswell;
CREATE DATABASE groundswell_events OWNER groundswell;
CREATE DATABASE groundswell_notifications OWNER groundswell;
CREATE DATABASE groundswell_campaigns OWNER groundswell;
