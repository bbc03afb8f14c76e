/* The page parasite as bytes in libck (see pages.c). */
	.section .rodata
	.balign 64
	.globl ck_parasite_blob
ck_parasite_blob:
	.incbin "pages.bin"
	.globl ck_parasite_blob_end
ck_parasite_blob_end:
	.section .note.GNU-stack,"",@progbits
