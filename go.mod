module github.com/afterok/afterok

go 1.26.8
